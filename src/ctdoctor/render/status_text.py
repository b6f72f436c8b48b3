"""Text rendering of the status report: a table designed for 80 columns first (short headers, units in
the header, numbers right-aligned, names elided in the middle) that takes the optional columns (a fill
bar, memory, rates, a trend) only when the width has room for them. The watch screen keeps its column
widths from frame to frame, so nothing jumps while it redraws."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ctdoctor.render import fmt, wrap
from ctdoctor.render.table import Column, layout
from ctdoctor.render.wrap import hang, with_source

human_bytes = fmt.size  # kept for the renderers that import it from here


def fill_bar(fill: float | None, width: int = 20) -> str:
    if fill is None:
        return "[dim]" + "·" * width + "[/]"
    n = min(width, round(fill * width))
    color = _fill_style(fill)
    return f"[{color}]" + "█" * n + "[/]" + "[dim]" + "·" * (width - n) + "[/]"


def _fill_style(fill: float | None) -> str:
    from ctdoctor.model.thresholds import FILL_CRITICAL, FILL_WARNING

    if fill is None:
        return "dim"
    return "red" if fill >= FILL_CRITICAL else "yellow" if fill >= FILL_WARNING else "green"


@dataclass
class WatchState:
    """What a watch screen remembers between frames: the count of each netns (for the trend and the
    new-entries rate when the kernel no longer counts inserts), the column widths (no reflow), the
    refresh interval for the header."""

    interval: float
    seen: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)
    keep: int = 30
    keys: bool = True  # q quits (stdin is a terminal)
    height: int | None = None  # the terminal's rows: a frame never scrolls (None: piped, every line)

    def observe(self, doc: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for ns in doc["namespaces"]:
            if ns.get("count") is None:
                continue
            hist = self.seen.setdefault(ns["name"], [])
            hist.append((now, int(ns["count"])))
            del hist[: -self.keep]

    def seed(self, history: dict[str, list[tuple[float, int]]], wall: float | None = None,
             mono: float | None = None) -> None:
        """Start each netns's trend from a recorder's history (``{netns: [(unix time, count), ...]}``):
        its samples become the watch's own, placed on the monotonic clock as long ago as they were
        taken, so the first frame already has a sparkline (and a count rate against the last one)."""
        wall = time.time() if wall is None else wall
        mono = time.monotonic() if mono is None else mono
        for name, samples in history.items():
            past = [(mono - (wall - t), int(c)) for t, c in samples if t <= wall]
            if past:
                hist = self.seen.setdefault(name, [])
                hist[:0] = [p for p in past if not hist or p[0] < hist[0][0]]
                del hist[: -self.keep]

    def count_rate(self, name: str) -> float | None:
        hist = self.seen.get(name) or []
        if len(hist) < 2 or hist[-1][0] <= hist[-2][0]:
            return None
        return max(0.0, (hist[-1][1] - hist[-2][1]) / (hist[-1][0] - hist[-2][0]))

    def trend(self, name: str) -> list[int]:
        return [c for _, c in self.seen.get(name) or []]


def _new_rate(ns: dict[str, Any], watch: WatchState | None) -> tuple[float | None, str | None]:
    """New entries per second and where it comes from: the kernel's insert counter while it still
    counts (before 5.x it did), else the change of the count between two frames of a watch."""
    stats, rates = ns.get("stats") or {}, ns.get("rates") or {}
    if stats.get("insert") and rates.get("insert") is not None:
        return rates["insert"], "insert"
    if watch is not None:
        r = watch.count_rate(ns["name"])
        if r is not None:
            return r, "count"
    return None, None


def _counter(ns: dict[str, Any], key: str, with_rate: bool) -> str:
    v = (ns.get("stats") or {}).get(key)
    if v is None:
        return fmt.MISSING
    r = (ns.get("rates") or {}).get(key)
    return fmt.num(v) + (f" +{fmt.rate(r)}/s" if with_rate and r else "")


def _table(doc: dict[str, Any], width: int, watch: WatchState | None) -> tuple[list[Any], set[str]]:
    spaces = doc["namespaces"]
    new = [_new_rate(ns, watch) for ns in spaces]
    kinds = {k for _, k in new if k}
    has_rates = any(ns.get("rates") for ns in spaces)
    cols = [
        Column("netns", [ns["name"] + (f" ({ns['pod']})" if ns.get("pod") else "") for ns in spaces],
               align="left", flex=True, min_width=8),
        Column("count", [fmt.num(ns.get("count")) for ns in spaces]),
        Column("max", [fmt.num(ns.get("max")) for ns in spaces]),
        Column("fill", [fmt.pct(ns.get("fill")) for ns in spaces],
               styles=[_fill_style(ns.get("fill")) for ns in spaces]),
        Column("", [fill_bar(ns.get("fill"), 10) for ns in spaces], align="left", optional=2, markup=True,
               fixed=10, name="bar"),
        Column("memory", [(fmt.size(ns["memory"]["bytes"]) + ("~" if ns["memory"]["estimated"] else ""))
                          if ns.get("memory") else fmt.MISSING for ns in spaces], optional=3),
        Column("drop", [_counter(ns, "drop", False) for ns in spaces],
               alt=[_counter(ns, "drop", True) for ns in spaces] if has_rates else None),
        Column("ins.fail", [_counter(ns, "insert_failed", False) for ns in spaces],
               alt=[_counter(ns, "insert_failed", True) for ns in spaces] if has_rates else None),
        Column("e.drop", [_counter(ns, "early_drop", False) for ns in spaces],
               alt=[_counter(ns, "early_drop", True) for ns in spaces] if has_rates else None),
    ]
    if kinds or watch is not None:  # a watch always has the column: no reflow after its first frame
        cols.append(Column("new/s", [fmt.rate(r) if r is not None else "-" for r, _ in new]))
    if watch is not None:
        cols.append(Column("trend", [fmt.sparkline(watch.trend(ns["name"]), 8) for ns in spaces],
                           align="left", optional=1, fixed=8))
    lines = layout(cols, width, memory=watch.widths if watch is not None else None)
    return lines, kinds



def _watch_header(doc: dict[str, Any], watch: WatchState, kinds: set[str], width: int) -> list[str]:
    how = {"insert": "insert counter", "count": "change of the count"}
    head = [f"ctdoctor status --watch  every {fmt.duration(watch.interval)}", time.strftime("%H:%M:%S")]
    full = max(doc["namespaces"], key=lambda ns: ns.get("fill") or 0, default=None)
    if full is not None and len(watch.trend(full["name"])) > 1:  # the fullest one's count, frame by frame
        head.append(f"{fmt.elide(full['name'], 16)} {fmt.sparkline(watch.trend(full['name']), 20)}")
    if kinds:
        head.append("new/s: " + ", ".join(how[k] for k in sorted(kinds, reverse=True)))
    if watch.keys:
        head.append("q quits")
    return wrap.items(head, width)


def _host(h: dict[str, Any], width: int) -> list[str]:
    items = [h["hostname"] or "?", f"kernel {h['kernel'] or '?'}",
             h["source"] + (f" {h['root']}" if h["source"] != "live" else "")]
    if h.get("cpus"):
        items.append(f"{fmt.num(h['cpus'])} CPUs")
    if h.get("mem_total"):
        items.append(f"{fmt.size(h['mem_total'])} RAM")
    return wrap.items(items, width)


def _settings(s: dict[str, Any], width: int) -> list[Any]:
    from rich.text import Text

    out: list[Any] = []
    if s["non_default"]:
        out.append(Text("settings not at the kernel default", style="bold"))
        for d in s["non_default"]:
            out.extend(with_source(f"{d['key']} = {d['value']}", f"default {d['default']}", width, "  ", "    "))
    if s["drift"]:
        out.append(Text("live settings that differ from the persisted ones", style="bold yellow"))
        for d in s["drift"]:
            out.extend(with_source(f"{d['key']}: live {d['live']}, persisted {d['persisted']}",
                                   f"{d['file']}:{d['line']}", width, "  ", "    "))
    if not s["non_default"] and not s["drift"]:
        out.extend(hang("all at kernel defaults; nothing persisted differs from live", width, label="settings"))
    return out


def _below(doc: dict[str, Any], width: int) -> list[Any]:
    """Hash sizing, modules, settings, the kernel log's events and the notes, as wrapped prose."""
    out: list[Any] = []
    ini = doc["namespaces"][0] if doc["namespaces"] else None
    if ini and ini.get("buckets") and ini.get("max"):
        out.extend(hang(f"{fmt.num(ini['buckets'])} buckets, max {fmt.num(ini['max'])} "
                        f"({fmt.num(round(ini['max'] / ini['buckets'], 2))} per bucket; both global, "
                        "counts per netns)", width, label="hash"))
    key = {"nf_conntrack", "nf_nat"}
    mods = [f"{m['name']} {m['state']}" + (f" (refcnt {m['refcount']}, held by {', '.join(m['holders']) or '-'})"
                                         if m["state"] == "loaded" and m["name"] in key else "")
            for m in doc["modules"] if m["state"] != "absent" or m["name"] in key]
    out.extend(hang("; ".join(mods) if mods else "not enough data", width, label="modules"))
    out.extend(_settings(doc["settings"], width))
    ev = doc["kernel_log"]["events"]
    if ev:
        out.extend(hang(", ".join(f"{k.replace('_', ' ')} {fmt.num(v)}" for k, v in ev.items()), width,
                        label="kernel log"))
    for n in doc["notes"]:
        out.extend(hang(n, width, label="note:", style="dim", label_style=""))
    return out


def _fullest_first(spaces: list[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
    """``rows`` namespaces for a screen too short for all: the initial one, then the fullest."""
    if rows >= len(spaces):
        return spaces
    init = [ns for ns in spaces if ns["name"] == "init"][:1]
    rest = sorted((ns for ns in spaces if ns not in init), key=lambda ns: -(ns.get("fill") or 0))
    return (init + rest)[: max(1, rows)]


def render(doc: dict[str, Any], console: Any = None, width: int | None = None,
           watch: WatchState | None = None) -> Any:
    from rich.console import Console, Group
    from rich.text import Text

    if width is None:
        width = (console or Console(highlight=False)).width
    kinds = {k for ns in doc["namespaces"] for _, k in [_new_rate(ns, watch)] if k}
    head = _watch_header(doc, watch, kinds, width) if watch is not None else []
    host = _host(doc["host"], width)
    below = _below(doc, width)
    hidden = 0
    if watch is not None and watch.height:  # a watch frame fits the screen: the fullest namespaces first
        rows = watch.height - len(head) - len(host) - 5  # blank, table head and rule, blank, a spare line
        shown = _fullest_first(doc["namespaces"], rows if rows >= len(doc["namespaces"]) else rows - 1)
        hidden = len(doc["namespaces"]) - len(shown)
        doc = {**doc, "namespaces": shown}
        below = below[: max(0, rows - len(shown) - (1 if hidden else 0))]
    lines, kinds = _table(doc, width, watch)
    parts: list[Any] = []
    if watch is not None:
        parts.append(Text("\n".join(_watch_header(doc, watch, kinds, width)), style="bold"))
    parts.extend(Text(ln, style="bold" if i == 0 else "") for i, ln in enumerate(host))
    parts.append(Text(""))
    parts.extend(lines)
    if hidden:
        parts.append(Text(f"… and {hidden} emptier namespace(s): a taller terminal, or --netns to choose",
                          style="dim"))
    if kinds and watch is None:
        parts.append(Text("new/s: the kernel's insert counter", style="dim"))
    if below:
        parts.append(Text(""))
        parts.extend(below)
    return Group(*parts)


def print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console

    con = Console(highlight=False)
    con.print(render(doc, con))
