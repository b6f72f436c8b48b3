"""ctdoctor lab list | run SCENARIO [--keep] [--scale N] | clean."""

from __future__ import annotations

from ctdoctor.commands.common import Needs, bounded, check_format
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    from ctdoctor.cli import global_options

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


def requires(args) -> Needs:
    return Needs(live=True, what="lab")

def run(args) -> int:
    fmt = check_format(args, ("text", "json"))
    cmd = getattr(args, "lab_command", None)
    if cmd is None:
        raise UsageError("lab needs a subcommand: list, run SCENARIO or clean")
    if cmd == "list":
        return _list(fmt)
    if cmd == "clean":
        from ctdoctor import lab

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
    from ctdoctor.lab import missing_requirements
    from ctdoctor.lab.scenarios import SCENARIOS

    missing = missing_requirements()
    rows = []
    for s in SCENARIOS.values():
        why = "; ".join(missing) if missing else s.unavailable()
        rows.append({"name": s.name, "summary": s.summary, "scale": f"{s.default_scale} {s.scale_meaning}",
                     "available": why is None, "why_not": why})
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit({"schema": 1, "scenarios": rows})
        return 0
    from rich.console import Console

    from ctdoctor.render.lab_text import render_list

    con = Console(highlight=False)
    con.print(render_list(rows, con.width))
    return 0


def _run(args, fmt: str) -> int:
    from ctdoctor.lab import run_scenario
    from ctdoctor.lab.scenarios import SCENARIOS

    if args.scenario not in SCENARIOS:
        from ctdoctor.commands.common import no_such

        raise no_such("lab scenario", args.scenario, SCENARIOS, see="ctdoctor lab list")

    from ctdoctor.render.progress import Progress

    with Progress(fmt) as progress:
        progress.step(f"building {args.scenario} in a throwaway namespace and watching what happens")
        with run_scenario(args.scenario, args.scale, keep=args.keep) as result:
            doc = {"scenario": result.scenario, "netns": result.netns.name, "inode": result.netns.inode,
                   "built": result.built, "observed": result.observed, "explanation": result.explanation,
                   "kept": args.keep}
            progress.step("removing the namespace" if not args.keep else "done")
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit(doc)
        return 0
    from rich.console import Console

    from ctdoctor.render.lab_text import render_run

    con = Console(highlight=False)
    con.print(render_run(doc, args.keep, con.width))
    return 0
