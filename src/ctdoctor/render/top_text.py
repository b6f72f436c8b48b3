"""Text and CSV rendering of `top`."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ctdoctor.render import fmt, wrap
from ctdoctor.render.table import Column, layout
from ctdoctor.render.wrap import hang


def _states(st: dict[str, int], total: int, n: int = 3) -> str:
    parts = [f"{k} {fmt.pct(v / total) if total else fmt.MISSING}" for k, v in list(st.items())[:n]]
    if len(st) > n:
        parts.append("…")
    return " ".join(parts)


@dataclass
class TopWatch:
    """What ``top --watch`` remembers between frames: the counts by key (the Δ column), the matched
    total (the trend), the column widths (no reflow) and the interval for the header."""

    interval: float
    rate: bool = False
    keys: bool = True  # q quits (stdin is a terminal)
    prev: dict[tuple[tuple[str, Any], ...], int] | None = None
    totals: list[int] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # a running recorder's counts

    def header(self, doc: dict[str, Any], width: int) -> list[str]:
        total = doc.get("matched") if doc.get("matched") is not None else doc.get("total")
        if not self.totals and not self.rate:
            self.totals.extend(self._recorded(doc))
        if isinstance(total, int):
            self.totals.append(total)
            del self.totals[:-30]
        items = [f"ctdoctor top --watch{' --rate' if self.rate else ''}  every {fmt.duration(self.interval)}",
                 time.strftime("%H:%M:%S")]
        if len(self.totals) > 1:
            items.append(f"{'new' if self.rate else 'matched'} {fmt.sparkline(self.totals, 20)}")
        if self.keys:
            items.append("q quits")
        return wrap.items(items, width)


    def _recorded(self, doc: dict[str, Any]) -> list[int]:
        """The counts a recorder saw of the one netns shown, when nothing is filtered out (then the
        matched total is that netns's count): the trend starts from them."""
        spaces = doc.get("namespaces") or []
        if len(spaces) != 1 or doc.get("matched") != doc.get("total"):
            return []
        now = time.time()
        return [c for t, c in self.history.get(str(spaces[0].get("netns")), []) if t <= now]



ADDRESSES = {"src", "dst", "reply_src", "reply_dst", "netns", "pod", "nat", "snat", "dnat", "zone", "mark"}


def _key_columns(doc: dict[str, Any]) -> list[Column]:
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    cols = []
    for k in keys:
        cells = ["-" if r["key"].get(k) in (None, "") else str(r["key"].get(k)) for r in doc["rows"]]
        numeric = all(c == "-" or c.isdigit() for c in cells)
        cols.append(Column(k, cells, align="right" if numeric and k not in ADDRESSES else "left",
                           flex=not numeric, min_width=min(15, max([len(k), *map(len, cells)]))))
    return cols


def _width(width: int | None) -> int:
    if width is not None:
        return width
    from rich.console import Console

    return Console().width


def render(doc: dict[str, Any], prev: dict[tuple[tuple[str, Any], ...], int] | None = None,
           width: int | None = None, watch: TopWatch | None = None) -> Any:
    from rich.console import Group
    from rich.text import Text

    width = _width(width)
    if watch is not None and prev is None:
        prev = watch.prev
    lines: list[Any] = [Text(ln, style="bold") for ln in (watch.header(doc, width) if watch else [])]
    for h in doc["namespaces"]:
        fill = ""
        if h.get("count") is not None and h.get("max"):
            fill = f", count {fmt.num(h['count'])} of max {fmt.num(h['max'])} ({fmt.pct(h['count'] / h['max'])})"
        what = (f"(netns {h['netns']}): " if h["netns"] else ": ") + f"{fmt.num(h['listed'])} listed{fill}" \
            + (" (a sample: the listing was cut; count is the kernel's)" if h.get("sample") else "")
        lines.extend(hang(what, width, label=h["source"]))
    filt = f", {fmt.num(doc['matched'])} matched the filters" if doc["matched"] != doc["total"] else ""
    lines.append(Text(f"grouped by {', '.join(doc['by'])}: {fmt.num(doc['groups'])} "
                      f"group{'' if doc['groups'] == 1 else 's'}{filt}"))
    if watch is not None:
        watch.prev = {tuple(r["key"].items()): r["count"] for r in doc["rows"]}
    if not doc["rows"]:
        lines.append(Text("no entries matched"))
        return Group(*lines)
    rows = doc["rows"]
    cols = _key_columns(doc)
    cols.append(Column("count", [fmt.num(r["count"]) for r in rows]))
    cols.append(Column("share", [fmt.pct(r["share"]) for r in rows]))
    if prev is not None:
        deltas = [r["count"] - prev.get(tuple(r["key"].items()), 0) for r in rows]
        cols.append(Column("Δ", [f"+{fmt.num(d)}" if d > 0 else fmt.num(d) for d in deltas],
                           styles=["green" if d > 0 else "red" if d < 0 else "" for d in deltas]))
    cols.append(Column("states", [_states(r["states"], r["count"]) for r in rows], align="left", flex=True,
                       min_width=12, optional=2))
    if doc["accounting"]:
        cols.append(Column("packets", [fmt.num(r.get("packets")) if r.get("packets") is not None else ""
                                       for r in rows], optional=1))
        cols.append(Column("bytes", [fmt.size(r.get("bytes")) for r in rows], optional=1))
    lines.append(Text(""))
    lines.extend(layout(cols, width, memory=watch.widths if watch else None))
    return Group(*lines)


def laid_out(doc: dict[str, Any], progress: Callable[[str], None] | None = None) -> str:
    """``render``'s table as the terminal will show it (colours when it takes them), laid out while a
    progress display can still say so: ``top --limit 0`` lays out every group."""
    from rich.console import Console

    if progress is not None:
        progress(f"laying out {fmt.num(len(doc['rows']))} rows")
    con = Console(highlight=False)
    with con.capture() as cap:
        con.print(render(doc))
    return cap.get()


def write_csv(doc: dict[str, Any], out: IO[str]) -> None:
    w = csv.writer(out)
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    head = keys + ["count", "share", "states"] + (["packets", "bytes"] if doc["accounting"] else [])
    w.writerow(head)
    for r in doc["rows"]:
        row = ["" if v is None else v for v in r["key"].values()]
        row += [r["count"], r["share"], ";".join(f"{k}={v}" for k, v in r["states"].items())]
        if doc["accounting"]:
            row += [r.get("packets", 0), r.get("bytes", 0)]
        w.writerow(row)


def render_rate(doc: dict[str, Any], width: int | None = None, watch: TopWatch | None = None) -> Any:
    """``top --rate``: new entries per second by key."""
    from rich.console import Group
    from rich.text import Text

    width = _width(width)
    lines: list[Any] = [Text(ln, style="bold") for ln in (watch.header(doc, width) if watch else [])]
    for h in doc["namespaces"]:
        lines.append(Text.assemble((f"netns {h['netns']}", "bold"),
                                   f": {fmt.rate(h['new_per_second'])} new/s, {fmt.rate(h['destroyed_per_second'])} "
                                   f"destroyed/s over {fmt.duration(h['seconds'])}"))
    lines.append(Text(f"new entries per second by {', '.join(doc['by'])}: {fmt.num(doc['groups'])} "
                      f"group{'' if doc['groups'] == 1 else 's'}"
                      + (f", {fmt.num(doc['matched'])} of {fmt.num(doc['new'])} matched the filters"
                         if doc["matched"] != doc["new"] else "")))
    if doc.get("lower_bound"):
        lines.append(Text(f"events were lost (ENOBUFS) in {doc['lost_windows']} of {doc['windows']} window(s): "
                          "these rates are a lower bound", style="yellow"))
    if not doc["rows"]:
        lines.append(Text("no new entries in the window"))
        return Group(*lines)
    rows = doc["rows"]
    cols = _key_columns(doc)
    cols += [Column("new/s", [fmt.rate(r["rate"]) for r in rows]), Column("count", [fmt.num(r["count"]) for r in rows]),
             Column("share", [fmt.pct(r["share"]) for r in rows]),
             Column("states", [_states(r["states"], r["count"]) for r in rows], align="left", flex=True,
                    min_width=12, optional=2)]
    lines.append(Text(""))
    lines.extend(layout(cols, width, memory=watch.widths if watch else None))
    return Group(*lines)


def write_rate_csv(doc: dict[str, Any], out: IO[str]) -> None:
    w = csv.writer(out)
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    w.writerow([*keys, "rate", "count", "share", "states"])
    for r in doc["rows"]:
        w.writerow(["" if v is None else v for v in r["key"].values()]
                   + [r["rate"], r["count"], r["share"], ";".join(f"{k}={v}" for k, v in r["states"].items())])
