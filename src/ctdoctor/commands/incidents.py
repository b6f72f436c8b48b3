"""ctdoctor incidents: the incidents `record` captured, newest last.

The folder is untrusted: a bundle anyone could have written there is read within limits
(``record.read_incident``), every value taken from it is checked for its type, and every text
is made inert for where it goes: no rich markup or terminal escapes on a terminal, no formula
in a spreadsheet. A bad bundle is a row with its reason; it never stops the listing.
"""

from __future__ import annotations

import math
import os
import sys

from ctdoctor.commands.common import check_format
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the folder `ctdoctor record --dir` writes")


def _text(v, limit: int = 256) -> str | None:
    from ctdoctor.model.textsafe import clean

    return clean(v, limit) if isinstance(v, str) else None


def _number(v, lo: float = 0.0, hi: float = math.inf) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        return None
    return v


def _first(doc, *keys):
    """doc[k1][k2][0] when each step has the right shape, else None."""
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return doc[0]
    return None


def collect_rows(d: str) -> list[dict]:
    from ctdoctor.errors import InputError
    from ctdoctor.monitor.record import bundles, not_bundles
    from ctdoctor.sources.incident import read_incident

    rows = []
    for name, size in bundles(d):
        path = os.path.join(d, name)
        row: dict = {"bundle": path, "size": size}
        try:
            inc = read_incident(path)
        except InputError as e:
            row["error"] = _text(str(e), 300)
            rows.append(row)
            continue
        top, rate = _first(inc, "top", "src"), _first(inc, "rates", "src")
        row.update({
            "time": _text(inc.get("time"), 32), "netns": _text(inc.get("netns"), 128), "pod": _pod(inc.get("pod")),
            "trigger": _text(inc.get("trigger"), 32), "detail": _text(inc.get("detail"), 300),
            "peak_fill": _number(inc.get("peak_fill"), 0, 100),
            "top_source": _text(top.get("key"), 64) if top else None,
            "top_source_share": _number(top.get("share"), 0, 1) if top else None,
            "top_new_source": _text(rate.get("key"), 64) if rate else None,
            "top_new_source_rate": _number(rate.get("rate")) if rate else None,
        })
        rows.append(row)
    for name, what in not_bundles(d):
        rows.append({"bundle": os.path.join(d, name), "size": None, "error": f"{name}: {what}: not read"})
    return rows


CSV_COLS = ["time", "netns", "trigger", "peak_fill", "top_source", "top_source_share", "top_new_source",
            "top_new_source_rate", "bundle", "error"]


def csv_cell(v) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts with = + - @ (or a tab or CR) would be
    run as a formula, so it gets a leading apostrophe; control characters are replaced."""
    from ctdoctor.model.textsafe import clean

    if v is None:
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v) if isinstance(v, float) else str(v)
    s = clean(str(v), 1024)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def run(args) -> int:
    fmt = check_format(args, ("text", "json", "csv"))
    if getattr(args, "root", None):
        raise UsageError("incidents reads --dir, not --root (give a bundle to --root to examine it)")
    d = args.dir
    if not os.path.isdir(d):
        raise UsageError(f"--dir {d}: no such directory")
    from ctdoctor.render.progress import Progress

    with Progress(fmt) as progress:
        progress.step(f"reading the incident bundles in {d}")
        rows = collect_rows(d)
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit({"schema": 1, "dir": d, "incidents": rows})
        return 0
    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(CSV_COLS)
        for r in rows:
            w.writerow([csv_cell(r.get(c)) for c in CSV_COLS])
        return 0
    from rich.console import Console

    from ctdoctor.render.incidents_text import render

    con = Console(highlight=False)
    con.print(render(rows, d, con.width))
    return 0


def _pod(p) -> str | None:
    """``namespace/name`` of the pod an incident names (incident.json is untrusted: strings only)."""
    if not isinstance(p, dict) or not isinstance(p.get("name"), str):
        return None
    ns = p.get("namespace") if isinstance(p.get("namespace"), str) else ""
    return _text(f"{ns}/{p['name']}" if ns else p["name"], 128)
