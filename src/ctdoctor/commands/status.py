"""ctdoctor status."""

from __future__ import annotations

from ctdoctor.commands.common import PERIOD, SECONDS, check_format, open_root
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--interval", type=SECONDS, default=None, metavar="S",
                   help="seconds between the two stats samples for rates (live default 1; 0 = no rates)")
    p.add_argument("--watch", type=PERIOD, default=None, metavar="N",
                   help="redraw every N seconds until Ctrl-C (text, live only)")


def _doc(root, args, interval):
    from ctdoctor.diagnose.status import status_report
    from ctdoctor.sources import snapshot

    snap = snapshot.build(root, getattr(args, "netns", None), interval=interval, with_rules=False)
    return status_report(snap)


def run(args) -> int:
    fmt = check_format(args, ("text", "json"))
    root = open_root(args)
    interval = args.interval
    if interval is None:
        interval = 1.0 if root.is_live else None
    if interval is not None and interval < 0:
        raise UsageError("--interval must be >= 0")
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


def _watch(root, args) -> int:
    """A frame every N seconds: redrawn in place on a terminal (q or Ctrl-C quits), one frame after the
    other when piped (so `status --watch 5 | tee log` keeps a frame per interval)."""
    import sys

    from rich.console import Console

    from ctdoctor.render.keys import Keys
    from ctdoctor.render.status_text import WatchState, render

    console = Console(highlight=False)
    state = WatchState(interval=args.watch, keys=sys.stdin.isatty() and sys.stdout.isatty())

    def frame():
        # The sampling interval doubles as the redraw period: rates cover the last N seconds
        doc = _doc(root, args, args.watch if root.is_live else None)
        state.observe(doc)
        return render(doc, console, watch=state)

    if not sys.stdout.isatty():
        try:
            while True:
                console.print(frame())
                console.print()
                sys.stdout.flush()
                if not root.is_live:
                    import time

                    time.sleep(args.watch)
        except KeyboardInterrupt:
            pass
        return 0
    from rich.live import Live

    with Keys() as keys, Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                # a q pressed meanwhile is read after the frame: it quits within one period
                state.height = console.size.height
                live.update(frame(), refresh=True)
                if keys.quit_pressed() or (not root.is_live and keys.wait_for_quit(args.watch)):
                    break
        except KeyboardInterrupt:
            pass
    return 0
