"""Text and CSV rendering of `top`."""

from __future__ import annotations

import csv


def _states(st: dict, total: int, n: int = 3) -> str:
    parts = [f"{k} {v * 100 / total:.0f}%" for k, v in list(st.items())[:n]]
    if len(st) > n:
        parts.append("…")
    return " ".join(parts)


def render(doc: dict, prev: dict | None = None):
    from rich import box
    from rich.console import Group
    from rich.table import Table

    from ctdoctor.render.status_text import human_bytes

    lines = []
    for h in doc["namespaces"]:
        fill = ""
        if h.get("count") is not None and h.get("max"):
            fill = f", count {h['count']} / max {h['max']} ({h['count'] * 100 / h['max']:.1f}%)"
        sample = " [yellow](a sample: the listing was cut; count is the kernel's)[/]" if h.get("sample") else ""
        lines.append(f"[bold]{h['source']}[/]" + (f" (netns {h['netns']})" if h["netns"] else "")
                     + f": {h['listed']} listed{fill}{sample}")
    filt = f", {doc['matched']} matched the filters" if doc["matched"] != doc["total"] else ""
    lines.append(f"grouped by {', '.join(doc['by'])}: {doc['groups']} groups{filt}")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    for k in keys:
        t.add_column(k, no_wrap=True)
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    if prev is not None:
        t.add_column("Δ", justify="right")
    t.add_column("states")
    if doc["accounting"]:
        t.add_column("packets", justify="right")
        t.add_column("bytes", justify="right")
    for r in doc["rows"]:
        cells = ["-" if v is None or v == "" else str(v) for v in r["key"].values()]
        cells += [str(r["count"]), f"{r['share'] * 100:.2f}%"]
        if prev is not None:
            d = r["count"] - prev.get(tuple(r["key"].items()), 0)
            cells.append(f"[green]+{d}[/]" if d > 0 else f"[red]{d}[/]" if d < 0 else "0")
        cells.append(_states(r["states"], r["count"]))
        if doc["accounting"]:
            cells += [str(r.get("packets", "")), human_bytes(r.get("bytes"))]
        t.add_row(*cells)
    if not doc["rows"]:
        lines.append("no entries matched")
        return Group(*lines)
    return Group(*lines, t)


def write_csv(doc: dict, out) -> None:
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


def render_rate(doc: dict):
    """``top --rate``: new entries per second by key."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    lines = []
    for h in doc["namespaces"]:
        lines.append(f"[bold]netns {h['netns']}[/]: {h['new_per_second']:g} new/s, {h['destroyed_per_second']:g} "
                     f"destroyed/s over {h['seconds']:g} s")
    lines.append(f"new entries per second by {', '.join(doc['by'])}: {doc['groups']} groups"
                 + (f", {doc['matched']} of {doc['new']} matched the filters" if doc["matched"] != doc["new"] else ""))
    if doc.get("lower_bound"):
        lines.append(f"[yellow]events were lost (ENOBUFS) in {doc['lost_windows']} of {doc['windows']} window(s): "
                     "these rates are a lower bound[/]")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    for k in keys:
        t.add_column(k, no_wrap=True)
    t.add_column("new/s", justify="right")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    t.add_column("states")
    for r in doc["rows"]:
        cells = ["-" if v is None or v == "" else str(v) for v in r["key"].values()]
        cells += [f"{r['rate']:g}", str(r["count"]), f"{r['share'] * 100:.2f}%", _states(r["states"], r["count"])]
        t.add_row(*cells)
    if not doc["rows"]:
        lines.append("no new entries in the window")
        return Group(*lines)
    return Group(*lines, t)


def write_rate_csv(doc: dict, out) -> None:
    w = csv.writer(out)
    keys = list(doc["rows"][0]["key"]) if doc["rows"] else list(doc["by"])
    w.writerow([*keys, "rate", "count", "share", "states"])
    for r in doc["rows"]:
        w.writerow(["" if v is None else v for v in r["key"].values()]
                   + [r["rate"], r["count"], r["share"], ";".join(f"{k}={v}" for k, v in r["states"].items())])
