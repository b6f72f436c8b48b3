"""A conntrack line of the kernel log, as data (parsed by ``sources.kernlog``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KernelLogEvent:
    kind: str
    line: str
    lineno: int
    source: str
    netns_inode: int | None = None
    when: str | None = None  # the timestamp as printed
    mono: str | None = None  # seconds since boot, when the line carries them (dedup key)
    text: str = ""  # the message without its timestamps (dedup key)
    buckets: int | None = None
    max: int | None = None
    suppressed: int | None = None
    at: float | None = None  # seconds since the epoch (local wall time read as UTC), when known
    boot: int | None = None  # 0: the boot the capture was taken in; -1: an earlier one; None: unknown
    suppressed_after: int = 0  # rate-limited copies the kernel reported right after this line
