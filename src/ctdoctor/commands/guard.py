"""ctdoctor guard: keep the live net.netfilter settings equal to the persisted ones.

Drift comes from a module reload (the module starts from its defaults), from
boot order, or from another tool writing the sysctls. Each pass reads the
persisted values (sysctl.d precedence, re-read every pass so files that
disappear and come back are followed) and writes back any live value that
differs, logging one journal-friendly line per change. ``--once`` does one
pass (cron, a systemd timer); otherwise it loops every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from ctdoctor.commands.common import PERIOD, Needs, check_format, open_root
from ctdoctor.errors import UsageError
from ctdoctor.write.guard import GuardState, log, one_pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one pass, then exit (for cron or a systemd timer)")
    p.add_argument("--interval", type=PERIOD, default=1.0, metavar="S", help="seconds between passes (default 1)")


def requires(args: argparse.Namespace) -> Needs:
    return Needs(root=True, what="guard", why="to write sysctls")

def run(args: argparse.Namespace) -> int:
    check_format(args, ("text",))  # --format is refused where it does not apply, never ignored

    root = open_root(args)
    if root.kind == "sosreport":
        raise UsageError("guard works on the live host (or a ctdoctor image directory for tests), not a sosreport")
    if getattr(args, "netns", None) not in (None, "init"):
        raise UsageError("guard keeps the host's persisted settings (sysctl.d applies to the initial netns); "
                         "--netns is not supported: a namespace's own settings are not persisted by the system")
    state = GuardState()
    if args.once:
        one_pass(root, state)
        return 1 if state.failed else 0
    log(f"guarding net.netfilter settings every {args.interval:g}s")
    try:
        while True:
            one_pass(root, state)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        log("stopped")
    sys.stdout.flush()
    return 0
