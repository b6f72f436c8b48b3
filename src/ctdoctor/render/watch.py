"""One watch loop for every ``--watch`` screen (status, top, top --rate).

On a terminal a frame is redrawn in place (rich Live) and ``q`` or Ctrl-C quits; piped, every frame is
printed after the one before (``status --watch 5 | tee log`` keeps a frame per interval, with no
cursor moves). ``frame(console)`` builds one frame; ``wait``: sleep ``period`` between frames (False
when building a frame already takes the period, as a live status's rate sample does)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def run(frame: Callable[[Any], Any], period: float, wait: bool = True, console: Any = None) -> int:
    from rich.console import Console

    console = console or Console(highlight=False)
    if not sys.stdout.isatty():
        try:
            while True:
                console.print(frame(console))
                console.print()
                sys.stdout.flush()
                if wait:
                    time.sleep(period)
        except KeyboardInterrupt:
            pass
        return 0
    from rich.live import Live

    from ctdoctor.render.keys import Keys

    with Keys() as keys, Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                live.update(frame(console), refresh=True)
                # a q pressed while the frame was built is read here: it quits within one period
                if keys.quit_pressed() or (wait and keys.wait_for_quit(period)):
                    break
        except KeyboardInterrupt:
            pass
    return 0
