"""HostRoot: the one type through which every file of a host is read.

The live host is ``HostRoot("/")``; a ctdoctor bundle, an extracted sosreport
or an archive of either is the same class over another directory (model:
prometheus/procfs's ``FS``). Captured command outputs are found under the
names sosreport gives them (``sos_commands/<plugin>/<mangled command>``); on
the live host the same call runs the command instead, so callers never care
which kind of root they read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from ctdoctor.errors import InputError
from ctdoctor.sources import archive


class RootKind(StrEnum):
    """What a HostRoot reads (its JSON value is the lower-case name)."""

    LIVE = "live"
    BUNDLE = "bundle"
    SOSREPORT = "sosreport"


LIVE, BUNDLE, SOSREPORT = RootKind.LIVE, RootKind.BUNDLE, RootKind.SOSREPORT

# Files larger than this are not slurped by read_text (entry listings are streamed).
READ_LIMIT = 64 << 20


def mangle_command(cmd: str) -> str:
    """The file name sosreport gives a command's output (sos Plugin._mangle_command)."""
    name = re.sub(r"^/(usr/|)(bin|sbin)/", "", cmd)
    name = re.sub(r"[^\w\-\.\/]+", "_", name)
    name = re.sub(r"/", ".", name).strip(" ._-")
    return name[:255]


@dataclass
class Captured:
    """A command's output and where it came from (a file path or a live command line)."""

    text: str
    source: str
    tailed: bool = False  # sosreport kept only the tail: the first line may be cut
    status: int = 0  # the command's exit status (live); non-zero output is an error message


@dataclass
class HostRoot:
    path: Path
    kind: str = LIVE
    label: str = "/"
    denied: list[str] = field(default_factory=list)  # paths we were not allowed to read
    irregular: list[str] = field(default_factory=list)  # FIFOs, devices, sockets: never read
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # facts parsed once per image (meta.json)
    host_root: str | None = None  # live, in a container: where the host's own files are (--host-root)

    def host_files(self) -> HostRoot:
        """The host's files (runtime metadata, /etc): ``--host-root`` when given, else this root."""
        if not self.is_live or not self.host_root or self.host_root == "/":
            return self
        return HostRoot(Path(self.host_root).resolve(), BUNDLE, self.host_root)

    # ---- construction -------------------------------------------------

    @classmethod
    def live(cls) -> HostRoot:
        return cls(Path("/"), LIVE, "/")

    @classmethod
    def open(cls, spec: str | None) -> HostRoot:
        """Open what ``--root`` names: nothing or ``/`` (live), a directory, or an archive."""
        if spec in (None, "", "/"):
            return cls.live()
        p = Path(spec)
        try:
            p.stat()
        except PermissionError:
            raise InputError(f"--root {spec}: permission denied") from None
        except OSError:
            raise InputError(f"--root {spec}: no such file or directory") from None
        if p.is_file():
            if not archive.is_archive(spec):
                raise InputError(
                    f"--root {spec}: not a directory or a .tar, .tar.gz or .tar.xz archive"
                )
            top = Path(archive.unpack(spec))
        elif p.is_dir():
            if not os.access(p, os.R_OK | os.X_OK):
                raise InputError(f"--root {spec}: permission denied")
            top = p
        else:
            raise InputError(f"--root {spec}: not a regular file or directory")
        try:
            top = _descend_single_folder(top)
        except PermissionError:
            raise InputError(f"--root {spec}: permission denied") from None
        kind = SOSREPORT if _looks_like_sosreport(top) else BUNDLE
        if kind == BUNDLE and not _looks_like_host_image(top):
            raise InputError(
                f"--root {spec}: does not look like a host image (no proc/, sos_commands/ or ctdoctor/ inside)"
            )
        return cls(top.resolve(), kind, str(spec))

    @property
    def is_live(self) -> bool:
        return self.kind == LIVE

    # ---- files --------------------------------------------------------

    def resolve(self, rel: str) -> Path | None:
        """The real path of ``rel`` inside the root, or None when a link escapes it."""
        rel = rel.lstrip("/")
        if self.is_live:
            return Path("/") / rel
        candidate = self.path / rel
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):
            return None
        if real != self.path and self.path not in real.parents:
            return None  # a symlink pointing outside the image: never followed
        return real

    def display(self, rel: str) -> str:
        """How evidence names a file: the host path, as on the host."""
        return "/" + rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        p = self.resolve(rel)
        return bool(p and p.exists())

    def is_dir(self, rel: str) -> bool:
        p = self.resolve(rel)
        return bool(p and p.is_dir())

    def listdir(self, rel: str) -> list[str]:
        p = self.resolve(rel)
        if not p or not p.is_dir():
            return []
        try:
            return sorted(os.listdir(p))
        except PermissionError:
            self.denied.append(self.display(rel))
            return []
        except OSError:
            return []

    def _open_regular(self, rel: str) -> IO[bytes] | None:
        """An open binary file, only when ``rel`` is a regular file inside the root (a FIFO or a
        device in an image would hang or flood every command), else None."""
        p = self.resolve(rel)
        if p is None:
            return None
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
        except PermissionError:
            self.denied.append(self.display(rel))
            return None
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                if not stat.S_ISDIR(st.st_mode):
                    self.irregular.append(self.display(rel))
                return None
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except OSError:
            os.close(fd)
            return None

    def read_bytes(self, rel: str, limit: int = READ_LIMIT) -> bytes | None:
        f = self._open_regular(rel)
        if f is None:
            return None
        try:
            with f:
                return _read_capped(f, limit)
        except OSError:
            return None

    def read_text(self, rel: str, limit: int = READ_LIMIT) -> str | None:
        data = self.read_bytes(rel, limit)
        if data is None:
            return None
        return data.decode("utf-8", "replace")

    def read_log_text(self, rel: str, limit: int = READ_LIMIT) -> str | None:
        """A log file's text; a rotated ``.gz``, ``.xz`` or ``.bz2`` one decompressed (at most ``limit``
        bytes of it). None when missing, unreadable or not a valid archive of its kind."""
        data = self.read_bytes(rel, limit)
        if data is None:
            return None
        if rel.endswith((".gz", ".xz", ".bz2")):
            opener: Any = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}[rel[rel.rindex("."):]]
            try:
                with opener(io.BytesIO(data)) as f:
                    data = f.read(limit)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
                return None
        return data.decode("utf-8", "replace")

    def open_binary(self, rel: str) -> IO[bytes] | None:
        """An open binary file for streaming, or None if missing / unreadable / not a regular file."""
        return self._open_regular(rel)


    # ---- captured commands ---------------------------------------------

    def capture(self, plugin: str, cmd: str, timeout: float = 30.0, netns: str | None = None) -> Captured | None:
        """A command's output: run live, or the file sosreport/collect saved it in.

        With ``netns`` the command is the one sos runs as ``ip netns exec NS CMD``.
        """
        full = f"ip netns exec {netns} {cmd}" if netns else cmd
        if self.is_live:
            cap = run_command(full, timeout=timeout)
            return cap if cap is not None and cap.status == 0 else None
        name = mangle_command(full)
        candidates = [f"sos_commands/{plugin}/{name}"]
        if netns:
            candidates.append(f"sos_commands/networking/namespaces/{netns}/{name}")
        for rel in candidates:
            p = self.resolve(rel)
            if p is None or not p.is_file():
                continue
            text = self.read_text(rel)
            if text is None:
                continue
            tailed = os.path.islink(self.path / rel) or p.name.endswith(".tailed")
            return Captured(text, self.display(rel).lstrip("/"), tailed)
        return None


def _read_capped(f: IO[bytes], limit: int) -> bytes:
    # Small reads: /proc/sys allocates a kernel buffer of the requested size (ENOMEM for huge ones).
    parts, total = [], 0
    while total < limit:
        chunk = f.read(min(1 << 20, limit - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def run_command(cmd: str, timeout: float = 30.0, preexec_fn: Callable[[], object] | None = None) -> Captured | None:
    """Run a command on the live host; None when the program is not installed."""
    argv = cmd.split()
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as sosreport captures it
            timeout=timeout,
            preexec_fn=preexec_fn,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):  # not runnable, timed out, or preexec (setns) failed
        return None
    return Captured(r.stdout.decode("utf-8", "replace"), cmd, status=r.returncode)


def _descend_single_folder(top: Path) -> Path:
    """An archive of one folder (``sosreport-host-2026-.../``) is that folder."""
    for _ in range(2):
        try:
            entries = [e for e in os.listdir(top) if not e.startswith(".")]
        except OSError:
            return top
        if len(entries) == 1 and (top / entries[0]).is_dir() and not (top / entries[0]).is_symlink():
            if entries[0] in ("proc", "etc", "sys", "sos_commands", "ctdoctor", "var", "run"):
                return top
            top = top / entries[0]
        else:
            return top
    return top


def _looks_like_sosreport(top: Path) -> bool:
    return (top / "sos_commands").is_dir() and not (top / "ctdoctor" / "meta.json").is_file()


def _looks_like_host_image(top: Path) -> bool:
    return any((top / d).exists() for d in ("proc", "sos_commands", "ctdoctor", "etc", "sys", "var/log", "sos_logs"))
