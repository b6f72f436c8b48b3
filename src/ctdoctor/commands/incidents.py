"""ctdoctor incidents: the incidents `record` captured, newest last."""

from __future__ import annotations

import os
import sys

from ctdoctor.commands.common import check_format
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the folder `ctdoctor record --dir` writes")


def collect_rows(d: str) -> list[dict]:
    from ctdoctor.errors import InputError
    from ctdoctor.record import bundles, read_incident

    rows = []
    for name, size in bundles(d):
        path = os.path.join(d, name)
        row: dict = {"bundle": path, "size": size}
        try:
            inc = read_incident(path)
        except InputError as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        top = (inc.get("top") or {}).get("src") or []
        rate = (inc.get("rates") or {}).get("src") or []
        row.update({
            "time": inc.get("time"), "netns": inc.get("netns"), "pod": _pod(inc.get("pod")),
            "trigger": inc.get("trigger"),
            "detail": inc.get("detail"), "peak_fill": inc.get("peak_fill"),
            "top_source": top[0]["key"] if top else None,
            "top_source_share": top[0]["share"] if top else None,
            "top_new_source": rate[0]["key"] if rate else None,
            "top_new_source_rate": rate[0]["rate"] if rate else None,
        })
        rows.append(row)
    return rows


def run(args) -> int:
    fmt = check_format(args, ("text", "json", "csv"))
    if getattr(args, "root", None):
        raise UsageError("incidents reads --dir, not --root (give a bundle to --root to examine it)")
    d = args.dir
    if not os.path.isdir(d):
        raise UsageError(f"--dir {d}: no such directory")
    rows = collect_rows(d)
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit({"schema": 1, "dir": d, "incidents": rows})
        return 0
    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        cols = ["time", "netns", "trigger", "peak_fill", "top_source", "top_source_share", "top_new_source",
                "top_new_source_rate", "bundle", "error"]
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ctdoctor.textsafe import clean

    con = Console(highlight=False)
    if not rows:
        con.print(f"no incidents in {d}")
        return 0
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ("time (UTC)", "netns", "trigger", "peak fill", "top source (entries)", "top new source (/s)", "bundle"):
        t.add_column(c, no_wrap=c.startswith("time"), overflow="fold")
    for r in rows:
        if "error" in r:
            t.add_row("?", "?", "?", "", "", "", f"{os.path.basename(r['bundle'])}: [red]{clean(r['error'], 120)}[/]")
            continue
        share = f" ({r['top_source_share'] * 100:.0f}%)" if r.get("top_source_share") is not None else ""
        newsrc = f"{r['top_new_source']} ({r['top_new_source_rate']:g}/s)" if r.get("top_new_source") else "-"
        t.add_row(clean(r["time"] or "?", 32), clean((r["netns"] or "?") + (f" ({r['pod']})" if r.get("pod") else ""), 64), clean(r["trigger"] or "?", 32),
                  f"{r['peak_fill'] * 100:.1f}%" if isinstance(r.get("peak_fill"), (int, float)) else "?",
                  (clean(str(r["top_source"]), 64) + share) if r.get("top_source") else "-", clean(newsrc, 80),
                  os.path.basename(r["bundle"]))
    con.print(t)
    con.print(f"read one with: ctdoctor --root {rows[-1]['bundle']} [top --netns NETNS | doctor]")
    return 0


def _pod(p) -> str | None:
    """``namespace/name`` of the pod an incident names (incident.json is untrusted: strings only)."""
    if not isinstance(p, dict) or not isinstance(p.get("name"), str):
        return None
    ns = p.get("namespace") if isinstance(p.get("namespace"), str) else ""
    return f"{ns}/{p['name']}" if ns else p["name"]
