"""Helpers shared by commands."""

from __future__ import annotations

from ctdoctor.errors import NeedsLiveKernel, UsageError


def open_root(args):
    from ctdoctor.sources.hostroot import HostRoot

    return HostRoot.open(getattr(args, "root", None))


def require_live(args, what: str) -> None:
    if getattr(args, "root", None) not in (None, "", "/"):
        raise NeedsLiveKernel(f"{what} needs the running kernel; it cannot work on a host image (--root)")


def require_root_user(what: str) -> None:
    import os

    if os.geteuid() != 0:
        raise UsageError(f"{what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run it with sudo")


def check_format(args, allowed: tuple[str, ...]) -> str:
    fmt = getattr(args, "format", None) or "text"
    if fmt not in allowed:
        raise UsageError(f"--format {fmt} is not available for this command (use one of: {', '.join(allowed)})")
    return fmt


def bounded(kind=float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """An argparse type: a finite number within [lo, hi] (``lo_open``: above lo). NaN, inf, 1e400 and
    out-of-range values are a one-line usage error, never an internal error or a busy loop."""
    import argparse
    import math

    def parse(text: str):
        try:
            v = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"{text} must be {'above' if lo_open else 'at least'} {lo:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{text} must be at most {hi:g}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


SECONDS = bounded(float, 0, 86400)  # an interval that may be 0 (no sampling)
PERIOD = bounded(float, 0.05, 86400)  # a redraw / polling period: never a busy loop
