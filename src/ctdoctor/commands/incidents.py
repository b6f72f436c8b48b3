"""ctdoctor incidents: the incidents `record` captured, newest last.

The folder is untrusted: ``monitor.incidents`` reads each bundle within limits and checks every
value; the renderers make every text inert for where it goes (no markup or escapes on a terminal,
no formula in a spreadsheet).
"""

from __future__ import annotations

import argparse
import os
import sys

from ctdoctor.commands.common import check_format
from ctdoctor.errors import UsageError
from ctdoctor.monitor.incidents import collect_rows
from ctdoctor.render.incidents_text import render, write_csv
from ctdoctor.render.jsonout import emit
from ctdoctor.render.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the folder `ctdoctor record --dir` writes")


def run(args: argparse.Namespace) -> int:
    fmt = check_format(args, ("text", "json", "csv"))
    if getattr(args, "root", None):
        raise UsageError("incidents reads --dir, not --root (give a bundle to --root to examine it)")
    d = args.dir
    if not os.path.isdir(d):
        raise UsageError(f"--dir {d}: no such directory")
    with Progress(fmt) as progress:
        progress.step(f"reading the incident bundles in {d}")
        rows = collect_rows(d)
    if fmt == "json":
        emit({"schema": 1, "dir": d, "incidents": rows})
        return 0
    if fmt == "csv":
        write_csv(rows, sys.stdout)
        return 0
    from rich.console import Console  # rich: 20 ms of imports, only for text

    con = Console(highlight=False)
    con.print(render(rows, d, con.width))
    return 0
