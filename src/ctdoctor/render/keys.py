"""Keys on a watch screen: 'q' quits without Enter; nothing happens when stdin is not a terminal."""

from __future__ import annotations

import select
import sys
import termios
import time
import tty
from typing import Any


class Keys:
    """Reads 'q' from a terminal without waiting for Enter; a no-op when stdin is not a tty."""

    old: list[Any] | None
    fd: int

    def __enter__(self) -> Keys:
        self.old = None
        if sys.stdin.isatty():
            self.fd = sys.stdin.fileno()
            self.old = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def quit_pressed(self) -> bool:
        """Was q pressed (without waiting)?"""
        if self.old is None:
            return False
        while select.select([sys.stdin], [], [], 0)[0]:
            if sys.stdin.read(1) in ("q", "Q"):
                return True
        return False

    def wait_for_quit(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.old is None:
                time.sleep(left)
                return False
            r, _, _ = select.select([sys.stdin], [], [], left)
            if r and sys.stdin.read(1) in ("q", "Q"):
                return True

    def __exit__(self, *a: object) -> None:
        if self.old is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)
