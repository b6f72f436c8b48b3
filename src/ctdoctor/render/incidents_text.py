"""Text rendering of ``incidents``: one line per incident at 80 columns (when, which netns, why, how full,
who filled it); the bundle names go in their own column only when the width has room, and a bundle
that could not be read is a line of its own below the table. Every cell is plain text: what a bundle
says is shown as written, never read as rich markup."""

from __future__ import annotations

import csv
import os
from typing import IO, TYPE_CHECKING, Any

from ctdoctor.model.fixes import Fix, lines
from ctdoctor.model.textsafe import clean
from ctdoctor.render import fmt
from ctdoctor.render.table import Column, layout

if TYPE_CHECKING:
    from rich.console import Group
    from rich.text import Text


def _when(t: str | None) -> str:
    """``2026-11-25T03:00:00Z`` as ``11-25 03:00:00`` (the year is in the bundle's name); else as written."""
    if not t:
        return fmt.MISSING
    if len(t) >= 19 and t[10] == "T":
        return t[5:10] + " " + t[11:19]
    return t


def _base(r: dict[str, Any]) -> str:
    return clean(os.path.basename(r["bundle"]), 256) or fmt.MISSING


def render(rows: list[dict[str, Any]], d: str, width: int) -> Group:
    from rich.console import Group
    from rich.text import Text

    if not rows:
        return Group(Text(f"no incidents in {d}"))
    good = [r for r in rows if "error" not in r]
    bad = [r for r in rows if "error" in r]
    parts: list[Text] = []
    if good:
        def src(r: dict[str, Any]) -> str:
            if not r.get("top_source"):
                return "-"
            share = r.get("top_source_share")
            return str(r["top_source"]) + (f" ({fmt.pct(share)})" if share is not None else "")

        def new(r: dict[str, Any]) -> str:
            rate = r.get("top_new_source_rate")
            return f"{r['top_new_source']} {fmt.rate(rate)}/s" if r.get("top_new_source") and rate is not None else "-"

        cols = [
            Column("when (UTC)", [_when(r.get("time")) for r in good], align="left"),
            Column("netns / pod", [r.get("pod") or r.get("netns") or fmt.MISSING for r in good], align="left",
                   flex=True, min_width=16),
            Column("trigger", [r.get("trigger") or fmt.MISSING for r in good], align="left"),
            Column("peak", [fmt.pct(r.get("peak_fill")) for r in good]),
            Column("top source", [src(r) for r in good], align="left", flex=True, min_width=16),
            Column("top new/s", [new(r) for r in good], align="left", flex=True, min_width=16, optional=2),
            Column("netns", [r.get("netns") or fmt.MISSING if r.get("pod") else "" for r in good], align="left",
                   optional=1, name="netns of pod"),
            Column("bundle", [_base(r) for r in good], align="left", optional=1),
        ]
        if not any(r.get("pod") for r in good):
            cols = [c for c in cols if c.key != "netns of pod"]
            cols[1].header = "netns"
        parts.extend(layout(cols, width))
    for r in bad:
        err = r["error"] or "not read"
        parts.append(Text(err if _base(r) in err else f"{_base(r)}: {err}", style="red"))
    if good:
        parts.append(Text(""))
        parts.append(Text(f"read {'it' if len(good) == 1 else 'the newest'} offline (the doctor, or top --netns NETNS):"))
        cmd = Fix(["ctdoctor", "--root", clean(good[-1]["bundle"], 1024), "doctor"])
        parts.extend(Text(ln, no_wrap=True, overflow="ignore") for ln in lines(cmd, width, "  $ "))
    return Group(*parts)


CSV_COLS = ["time", "netns", "trigger", "peak_fill", "top_source", "top_source_share", "top_new_source",
            "top_new_source_rate", "bundle", "error"]


def csv_cell(v: Any) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts with = + - @ (or a tab or CR) would be
    run as a formula, so it gets a leading apostrophe; control characters are replaced."""
    if v is None:
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v) if isinstance(v, float) else str(v)
    s = clean(str(v), 1024)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def write_csv(rows: list[dict[str, Any]], out: IO[str]) -> None:
    """The incidents as CSV: a header, then a line per row, every cell inert in a spreadsheet."""
    w = csv.writer(out)
    w.writerow(CSV_COLS)
    for r in rows:
        w.writerow([csv_cell(r.get(c)) for c in CSV_COLS])
