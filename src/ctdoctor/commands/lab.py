"""ctdoctor lab list | run SCENARIO [--keep] [--scale N] | clean."""

from __future__ import annotations

import argparse
from typing import Any

from ctdoctor import lab
from ctdoctor.commands.common import Needs, bounded, check_format, global_options, no_such
from ctdoctor.errors import UsageError
from ctdoctor.lab.scenarios import SCENARIOS, catalogue
from ctdoctor.render.jsonout import emit
from ctdoctor.render.lab_text import render_list, render_run
from ctdoctor.render.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lab_command", metavar="list|run|clean")
    global_options(sub.add_parser("list", help="the scenarios, and whether this machine can run them"))
    r = sub.add_parser("run", help="build a scenario, show what a user observes, remove it")
    global_options(r)
    r.add_argument("scenario")
    r.add_argument("--keep", action="store_true", help="leave the netns in place (remove with: ctdoctor lab clean)")
    r.add_argument("--scale", type=bounded(int, 1, 10**8), default=None, metavar="N", help="size of the scenario (see lab list)")
    c = sub.add_parser("clean", help="remove lab namespaces left behind (found by the ctdlab- prefix)")
    global_options(c)
    c.add_argument("names", nargs="*", metavar="NETNS", help="only these lab namespaces (default: every ctdlab-* one)")


def requires(args: argparse.Namespace) -> Needs:
    return Needs(live=True, what="lab")


def run(args: argparse.Namespace) -> int:
    fmt = check_format(args, ("text", "json"))
    cmd = getattr(args, "lab_command", None)
    if cmd is None:
        raise UsageError("lab needs a subcommand: list, run SCENARIO or clean")
    if cmd == "list":
        return _list(fmt)
    if cmd == "clean":
        missing = lab.missing_requirements()
        if missing:
            raise UsageError("the lab needs " + "; ".join(missing))
        bad = [n for n in args.names if not n.startswith(lab.PREFIX)]
        if bad:
            raise UsageError(f"not a lab namespace (they start with {lab.PREFIX}): {', '.join(bad)}")
        removed = lab.clean(args.names or None)
        print(f"removed {len(removed)} lab namespace(s)" + (": " + ", ".join(removed) if removed else ""))
        return 0
    return _run(args, fmt)


def _list(fmt: str) -> int:
    rows = catalogue()
    if fmt == "json":
        emit({"schema": 1, "scenarios": rows})
        return 0
    from rich.console import Console  # rich: 20 ms of imports, only for text

    con = Console(highlight=False)
    con.print(render_list(rows, con.width))
    return 0


def _run(args: argparse.Namespace, fmt: str) -> int:
    if args.scenario not in SCENARIOS:
        raise no_such("lab scenario", args.scenario, SCENARIOS, see="ctdoctor lab list")
    with Progress(fmt) as progress:
        progress.step(f"building {args.scenario} in a throwaway namespace and watching what happens")
        with lab.run_scenario(args.scenario, args.scale, keep=args.keep) as result:
            doc: dict[str, Any] = {"scenario": result.scenario, "netns": result.netns.name,
                                   "inode": result.netns.inode, "built": result.built, "observed": result.observed,
                                   "explanation": result.explanation, "kept": args.keep}
            progress.step("removing the namespace" if not args.keep else "done")
    if fmt == "json":
        emit(doc)
        return 0
    from rich.console import Console  # rich: 20 ms of imports, only for text

    con = Console(highlight=False)
    con.print(render_run(doc, args.keep, con.width))
    return 0
