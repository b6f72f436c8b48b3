"""Clean exits on SIGTERM and SIGHUP: they become SystemExit, so ``finally`` blocks and
``atexit`` handlers run (an unpacked image's temporary folder is removed, a lab namespace
deleted) instead of the process dying with its leftovers."""

from __future__ import annotations

import signal


def _exit(signum, _frame):
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _exit)
        except (ValueError, OSError):  # not the main thread, or not settable
            pass


__all__ = ["install_signal_handlers"]
