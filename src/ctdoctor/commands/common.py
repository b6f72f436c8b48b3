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
