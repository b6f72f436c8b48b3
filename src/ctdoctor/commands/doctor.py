"""ctdoctor [doctor]: every check, with evidence, explanation and fix commands."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from ctdoctor.commands.common import SECONDS, check_format, open_root
from ctdoctor.diagnose import doctor
from ctdoctor.render.jsonout import emit
from ctdoctor.render.nagios import render as nagios
from ctdoctor.render.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", metavar="CODES", help="run only these checks (CT001,CT002,...)")
    p.add_argument("--skip", metavar="CODES", help="skip these checks")
    p.add_argument("--interval", type=SECONDS, default=None, metavar="S",
                   help="seconds between two counter samples for rates (live default 1; 0 = no sampling)")
    p.add_argument("--compare", metavar="IMAGE",
                   help="a later host image of the same host: its counters give the rates (with --root)")
    p.add_argument("--verbose", action="store_true",
                   help="the details of every finding (default: of the warnings and criticals)")
    p.add_argument("--no-pager", action="store_true",
                   help="never page the text report (on a terminal a report taller than it goes through $PAGER "
                        "or less -R)")


def run(args: argparse.Namespace) -> int:
    fmt = check_format(args, ("text", "json", "nagios"))
    only, skip = doctor.parse_codes(args.only), doctor.parse_codes(args.skip)
    root = open_root(args)
    with Progress(fmt) as progress:
        result = doctor.diagnose(root, getattr(args, "netns", None), only, skip, args.interval, args.compare,
                                 step=progress.step)
    args._exit_code = result.code  # kept when the reader of a pipe leaves early (`| head -1`)
    if fmt == "json":
        emit(result.doc)
    elif fmt == "nagios":
        print(nagios(result.doc, result.code, result.namespaces))
    else:
        from rich.console import Console  # rich: 20 ms of imports, only when rendering text

        from ctdoctor.render.doctor_text import render  # imports rich

        con = Console(highlight=False)
        report = render(result.doc, verbose_info=args.verbose, width=con.width)
        if args.no_pager or not con.is_terminal:
            con.print(report, crop=False)  # a command's one long word is never cut
        else:
            _page(con, report)
    return result.code


def _page(con: Any, report: Any) -> None:
    """On a terminal: the report as it is when it fits, else through $PAGER (default less -R, which
    keeps the colours and quits at once on a short screen)."""
    import subprocess  # the pager: the one program a command runs itself (test_layers allows it here only)

    with con.capture() as cap:
        con.print(report, crop=False)
    text = cap.get()
    if text.count("\n") < con.height:
        sys.stdout.write(text)
        return
    pager = shlex.split(os.environ.get("PAGER") or "less -R")
    try:
        subprocess.run(pager, input=text.encode(), check=False)
    except (OSError, ValueError):  # no pager here: the report as it is
        sys.stdout.write(text)
