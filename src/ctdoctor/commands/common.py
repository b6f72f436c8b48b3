"""Helpers shared by commands."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ctdoctor.errors import NeedsLiveKernel, UsageError, did_you_mean, no_such

if TYPE_CHECKING:
    from ctdoctor.sources.hostroot import HostRoot

__all__ = ["did_you_mean", "no_such"]  # the lookups' suggestion, kept in errors for every room


def open_root(args: argparse.Namespace) -> HostRoot:
    """The host (or image) ``--root`` names, with ``--host-root`` for pod names when in a container."""
    # imported here: hostroot brings dataclasses and subprocess (20 ms), which the commands that read
    # no host (checks, explain, completion) and every command's start are spared
    from ctdoctor.sources.hostroot import HostRoot

    root = HostRoot.open(getattr(args, "root", None))
    host_root = getattr(args, "host_root", None)
    if host_root:
        if root.is_live and not os.path.isdir(host_root):
            raise UsageError(f"--host-root {host_root}: not a directory")
        root.host_root = host_root
    return root


def add_global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after its name (``suppress``: on a sub-command's
    parser, where an option left out must not overwrite the one given before the command)."""
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--root", metavar="PATH", default=d,
                   help="read a host image (directory, .tar[.gz|.xz], sosreport) instead of this host")
    p.add_argument("--netns", metavar="NAME|all", default=d,
                   help="network namespace: init (default), a name, pid:N, an inode, or all")
    p.add_argument("--format", choices=("text", "json", "nagios", "csv"), default=d if suppress else "text",
                   help="output format (default text)")
    p.add_argument("--host-root", metavar="PATH", default=d,
                   help="the host's files when ctdoctor runs in a container (as node_exporter's --path.rootfs): "
                        "runtime and kubelet metadata for pod names")
    p.add_argument("--color", choices=("auto", "always", "never"), default=d,
                   help="colour in text output: auto (default: on a terminal, unless NO_COLOR is set), always, never")


def global_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Global options on a nested sub-command parser (``lab run X --format json``)."""
    add_global_options(p, suppress=True)
    return p


class Needs(NamedTuple):
    """A command's preconditions, declared by its module (``requires(args) -> Needs``) and enforced
    in one place (``enforce``, called by the CLI before ``run``). A NamedTuple, not a dataclass:
    importing dataclasses (10 ms, with inspect) is kept off the start of every command."""

    live: bool = False  # the running kernel: a host image (--root) is refused
    root: bool = False  # euid 0 when acting on the live host
    what: str = ""  # the command as the user typed it, for the message
    why: str = "CAP_NET_ADMIN and CAP_SYS_ADMIN"  # what root is needed for


NOTHING = Needs()


def is_image(args: argparse.Namespace) -> bool:
    return getattr(args, "root", None) not in (None, "", "/")


def enforce(needs: Needs, args: argparse.Namespace) -> None:
    if needs.live and is_image(args):
        raise NeedsLiveKernel(f"{needs.what} needs the running kernel; it cannot work on a host image (--root)")
    if needs.root and not is_image(args) and os.geteuid() != 0:
        raise UsageError(f"{needs.what} needs root ({needs.why}); run it with sudo")


def check_format(args: argparse.Namespace, allowed: tuple[str, ...]) -> str:
    fmt = getattr(args, "format", None) or "text"
    if fmt not in allowed:
        raise UsageError(f"--format {fmt} is not available for this command (use one of: {', '.join(allowed)})")
    return fmt


def bounded(kind: type[int] | type[float] = float, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within [lo, hi] (``lo_open``: above lo). NaN, inf, 1e400 and
    out-of-range values are a one-line usage error, never an internal error or a busy loop."""

    def parse(text: str) -> float:
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


def warm_imports(*modules: str) -> threading.Thread:
    """Import modules in a background thread: the renderer's (rich, ~20 ms) while the C scanner,
    which releases the GIL, reads the listing. The thread is joined before it is needed, and an
    import that fails there fails again, with its message, where the module is used."""

    def load() -> None:
        for m in modules:
            try:
                importlib.import_module(m)
            except Exception:
                return

    t = threading.Thread(target=load, name="ctdoctor-warm", daemon=True)
    t.start()
    return t
