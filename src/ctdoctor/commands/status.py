"""ctdoctor status."""

from __future__ import annotations

import argparse
from typing import Any

from ctdoctor.commands.common import PERIOD, SECONDS, check_format, open_root
from ctdoctor.errors import UsageError
from ctdoctor.sources.incident import DEFAULT_DIR, recorder_history


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=SECONDS, default=None, metavar="S",
                   help="seconds between the two stats samples for rates (live default 1; 0 = no rates)")
    p.add_argument("--watch", type=PERIOD, default=None, metavar="N",
                   help="redraw every N seconds until Ctrl-C (text, live only)")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="with --watch: start the trend from the samples a running `ctdoctor record --dir DIR` "
                        f"keeps (default {DEFAULT_DIR}; ignored when no recorder runs there)")


def _doc(root: Any, args: argparse.Namespace, interval: float | None) -> dict[str, Any]:
    from ctdoctor.diagnose.status import status_report
    from ctdoctor.sources import snapshot

    snap = snapshot.build(root, getattr(args, "netns", None), interval=interval, with_rules=False)
    return status_report(snap)


def run(args: argparse.Namespace) -> int:
    fmt = check_format(args, ("text", "json"))
    root = open_root(args)
    interval = args.interval
    if interval is None:
        interval = 1.0 if root.is_live else None
    if interval is not None and interval < 0:
        raise UsageError("--interval must be >= 0")
    if args.history is not None and args.watch is None:
        raise UsageError("--history goes with --watch (it starts the watch's trend)")
    if args.watch is not None:
        if args.watch <= 0:
            raise UsageError("--watch needs a positive number of seconds")
        if fmt != "text":
            raise UsageError("--watch works with --format text only")
        return _watch(root, args)
    doc = _doc(root, args, interval or None)
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit(doc)
    else:
        from ctdoctor.render.status_text import print_status

        print_status(doc)
    return 0


def _watch(root: Any, args: argparse.Namespace) -> int:
    """A frame every N seconds: redrawn in place on a terminal (q or Ctrl-C quits), one frame after the
    other when piped (render/watch.py)."""
    import sys

    from ctdoctor.render import watch
    from ctdoctor.render.status_text import WatchState, render

    state = WatchState(interval=args.watch, keys=sys.stdin.isatty() and sys.stdout.isatty())
    if root.is_live:  # a recorder running on this host: its recent samples start the trend
        state.seed(recorder_history(args.history or DEFAULT_DIR))

    def frame(console: Any) -> Any:
        # live, the sampling interval doubles as the redraw period: rates cover the last N seconds
        doc = _doc(root, args, args.watch if root.is_live else None)
        state.observe(doc)
        state.height = console.size.height if sys.stdout.isatty() else None
        return render(doc, console, watch=state)

    return watch.run(frame, args.watch, wait=not root.is_live)
