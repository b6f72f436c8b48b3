"""Progress on stderr for long work (a spinner with what is being done), shown only on a terminal, only
for text output, and only once a step has taken more than ``delay`` seconds: a quick command never
flickers, a piped one or JSON/CSV/Nagios output never gets a byte of it.

``Progress`` is a ``Callable[[str], None]``: pass it (or its ``step``) as ``progress=`` to code that
reports what it does, e.g. ``facts.context(..., progress=p)``."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Any


class Progress:
    def __init__(self, fmt: str = "text", stream: IO[str] | None = None, delay: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.enabled = fmt == "text" and tty and not os.environ.get("CTDOCTOR_NO_PROGRESS") \
            and os.environ.get("TERM") != "dumb"
        self.text = ""
        self._status: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        """What is being done now; shown once the work has gone on for ``delay`` seconds."""
        if not self.enabled or self._closed:
            return
        with self._lock:
            self.text = text
            if self._status is not None:
                self._status.update(text)
            elif self._timer is None:
                self._timer = threading.Timer(max(0.0, self.delay - (time.monotonic() - self.started)), self._show)
                self._timer.daemon = True
                self._timer.start()

    __call__ = step

    def _show(self) -> None:
        from rich.console import Console

        with self._lock:
            if self._closed or self._status is not None:
                return
            con = Console(file=self.stream, stderr=self.stream is sys.stderr, highlight=False)
            self._status = con.status(self.text, spinner="dots")
            self._status.start()

    def close(self) -> None:
        """Remove the line (it was transient): the output that follows starts on a clean screen."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._status is not None:
                self._status.stop()
                self._status = None

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
