"""Helpers shared by commands."""

from __future__ import annotations

from typing import NamedTuple

from ctdoctor.errors import NeedsLiveKernel, UsageError, did_you_mean, no_such

__all__ = ["did_you_mean", "no_such"]  # the lookups' suggestion, kept in errors for every room


def open_root(args):
    from ctdoctor.sources.hostroot import HostRoot

    root = HostRoot.open(getattr(args, "root", None))
    host_root = getattr(args, "host_root", None)
    if host_root:
        import os

        if root.is_live and not os.path.isdir(host_root):
            from ctdoctor.errors import UsageError

            raise UsageError(f"--host-root {host_root}: not a directory")
        root.host_root = host_root
    return root


class Needs(NamedTuple):
    """A command's preconditions, declared by its module (``requires(args) -> Needs``) and enforced
    in one place (``enforce``, called by the CLI before ``run``). A NamedTuple, not a dataclass:
    importing dataclasses (10 ms, with inspect) is kept off the start of every command."""

    live: bool = False  # the running kernel: a host image (--root) is refused
    root: bool = False  # euid 0 when acting on the live host
    what: str = ""  # the command as the user typed it, for the message
    why: str = "CAP_NET_ADMIN and CAP_SYS_ADMIN"  # what root is needed for


NOTHING = Needs()


def is_image(args) -> bool:
    return getattr(args, "root", None) not in (None, "", "/")


def enforce(needs: Needs, args) -> None:
    import os

    if needs.live and is_image(args):
        raise NeedsLiveKernel(f"{needs.what} needs the running kernel; it cannot work on a host image (--root)")
    if needs.root and not is_image(args) and os.geteuid() != 0:
        raise UsageError(f"{needs.what} needs root ({needs.why}); run it with sudo")


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


def warm_imports(*modules: str):
    """Import modules in a background thread: the renderer's (rich, ~20 ms) while the C scanner,
    which releases the GIL, reads the listing. The thread is joined before it is needed, and an
    import that fails there fails again, with its message, where the module is used."""
    import threading

    def load():
        import importlib

        for m in modules:
            try:
                importlib.import_module(m)
            except Exception:
                return

    t = threading.Thread(target=load, name="ctdoctor-warm", daemon=True)
    t.start()
    return t
