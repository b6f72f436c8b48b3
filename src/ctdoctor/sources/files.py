"""Plain files ctdoctor is pointed at (``--web.config.file`` and its certificates, a saved plan, a
spooled listing): opened here, so the rooms above read what they are handed and open nothing."""

from __future__ import annotations

import os
from typing import BinaryIO


def read_bytes(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a file; OSError as the open or the read raised it."""
    with open(path, "rb") as f:
        return f.read(limit)


def check_readable(path: str) -> None:
    """OSError (naming the file) unless it can be opened for reading: a library that would open
    it later (``ssl``) says less about which file it could not read."""
    with open(path, "rb"):
        pass


def open_read(path: str) -> BinaryIO:
    """A file opened for reading in binary (the caller closes it, e.g. with ``with``)."""
    return open(path, "rb")


class MemFile:
    """Bytes as a path a library that only takes paths can load (a memfd: never on disk)."""

    def __init__(self, data: bytes):
        self.fd = os.memfd_create("ctdoctor-mem", os.MFD_CLOEXEC)
        os.write(self.fd, data)

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
