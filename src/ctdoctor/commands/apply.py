"""ctdoctor apply: persist and apply settings; a dry run with a diff unless --yes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ctdoctor.commands.common import Needs, bounded, check_format, open_root
from ctdoctor.diagnose import plan
from ctdoctor.diagnose.facts import context
from ctdoctor.errors import UsageError
from ctdoctor.render.page import terminal_width
from ctdoctor.render.wrap import prose
from ctdoctor.sources import snapshot
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.write import apply
from ctdoctor.write.files import diff, write

INT_MAX = 2**31 - 1  # the sysctls are C ints
MIN_MAX = 1024  # below this a table is useless; 0 (unlimited) is never written
MIN_BUCKETS = 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max", type=bounded(int, MIN_MAX, INT_MAX), metavar="N",
                   help=f"nf_conntrack_max ({MIN_MAX}..{INT_MAX}, and at least the current count)")
    p.add_argument("--buckets", type=bounded(int, MIN_BUCKETS, 1 << 30), metavar="N",
                   help="hash buckets (nf_conntrack_buckets / hashsize=)")
    p.add_argument("--timeout", action="append", default=[], metavar="NAME=SECONDS",
                   help="e.g. tcp_timeout_established=86400 (repeatable)")
    p.add_argument("--from-plan", nargs="?", const="", default=None, metavar="PLAN.json",
                   help="use what `ctdoctor plan` picks: exactly the numbers of a saved plan (`ctdoctor plan "
                        "--format json > PLAN.json`), else a plan made now the same way (every netns, a 1 s sample)")
    p.add_argument("--yes", action="store_true", help="write the files and apply live (default: show the diff)")


def _plan_now(root: HostRoot) -> dict[str, Any]:
    """The plan `ctdoctor plan` would print now: every netns, the same sample."""
    snap = snapshot.build(root, "all", interval=1.0 if root.is_live else None, with_rules=False, with_log=False)
    return plan.make_plan(context(snap, root, live=root.is_live))


def requires(args: argparse.Namespace) -> Needs:
    return Needs(root=True, what="apply --yes", why="to write /etc and sysctls") if args.yes else Needs()

def run(args: argparse.Namespace) -> int:
    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored
    root = open_root(args)
    if root.kind == "sosreport" and args.yes:
        raise UsageError("apply --yes never writes into a sosreport (it is evidence): run without --yes for the "
                         "diff to apply on that host")
    if not root.is_live and not root.path.is_dir():
        raise UsageError("apply --root needs a directory")
    timeouts = apply.parse_timeouts(args.timeout)
    from_plan = None
    if args.from_plan is not None:
        saved = args.from_plan
        from_plan = (lambda: apply.saved_plan(saved)) if saved else (lambda: _plan_now(root))
    changes, live, _ = apply.compute(root, args.max, args.buckets, timeouts, from_plan)
    d = diff(changes)
    where = "" if root.is_live else f" (in {root.label})"
    warns = apply.overrides(root, changes)
    width = terminal_width()
    for w in warns:
        _say(f"warning: {w}", width)
    if not d and not live:
        _say(f"nothing to change{where}: files and live values already match"
             + ("; but see the warning above: another file overrides them at boot" if warns else ""), width)
        return 1 if warns else 0
    if root.kind == "sosreport":
        live = []  # a sosreport's host is not this one: only the files to write there
        where = f" (for the host of {root.label}: apply this diff there)"
    if d:
        sys.stdout.write(d)
    for k, cur, v in live:
        one = f"live: sysctl -w {k}={v}   # now {cur}"
        print(one if len(one) <= width else f"live: sysctl -w {k}={v}\n      # now {cur}")
    if not args.yes:
        _say(f"dry run{where}: nothing written. Run again with --yes to write these files and apply the values.",
             width)
        return 0
    written = write(root, changes)
    apply.apply_live(root, live)
    _say(f"wrote {len(written)} file(s){where}" + (": " + ", ".join(written) if written else "")
         + f"; applied {len(live)} live value(s)", width)
    return 1 if warns else 0


def _say(text: str, width: int) -> None:
    """A sentence wrapped between words at the terminal's width, its next lines indented."""
    print("\n".join(prose(text, width, "", "  ")))
