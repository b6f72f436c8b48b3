"""Writing files safely: computed first, shown as a diff, then written atomically with a backup.

A ``FileChange`` is plain data (path, old text, new text). ``diff()`` shows it;
``write()`` writes a temporary file in the same directory, fsyncs it and
renames it over the target, so a crash leaves either the old or the new file,
never a partial one. The old file is kept as ``<file>.ctdoctor-bak`` (the
first backup is never overwritten: it is the state before ctdoctor).
Unchanged files are not touched, so a second run is a no-op.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctdoctor.errors import Failure, InputError, UsageError
from ctdoctor.sources.hostroot import HostRoot

BACKUP_SUFFIX = ".ctdoctor-bak"


@dataclass
class FileChange:
    path: str  # host path, e.g. /etc/sysctl.d/90-ctdoctor.conf
    old: str | None  # None: the file does not exist
    new: str
    mode: int = 0o644
    why: str = ""

    @property
    def changed(self) -> bool:
        return self.old != self.new


def read_current(root: HostRoot, path: str) -> str | None:
    return root.read_text(path.lstrip("/"))


def diff(changes: list[FileChange]) -> str:
    out: list[str] = []
    for c in changes:
        if not c.changed:
            continue
        a = (c.old or "").splitlines(keepends=True)
        b = c.new.splitlines(keepends=True)
        out.extend(difflib.unified_diff(a, b, fromfile=c.path if c.old is not None else "/dev/null",
                                        tofile=c.path))
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
    return "".join(out)


def _crash_point(name: str) -> None:
    """Test hook: CTDOCTOR_CRASH_AT=<name> kills the process right there (a real crash, no cleanup)."""
    if os.environ.get("CTDOCTOR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def write(root: HostRoot, changes: list[FileChange]) -> list[str]:
    """Write the changed files under ``root``; returns the paths written."""
    written = []
    targets = [(c, confined_target(root, c.path)) for c in changes if c.changed]  # all checked before any write
    for c, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        confined_target(root, c.path)  # again: the folders now exist
        mode = c.mode
        if c.old is not None:
            mode = os.stat(target).st_mode & 0o7777  # keep the file's own mode
            bak = target.with_name(target.name + BACKUP_SUFFIX)
            if not bak.exists():
                _atomic(bak, c.old.encode(), mode)
        _atomic(target, c.new.encode(), mode)
        written.append(c.path)
    return written


def confined_target(root: HostRoot, path: str) -> Path:
    """Where ``path`` is written under ``root``; refuses a path that resolves outside the root (a
    symlinked ``etc/sysctl.d``, ``..``, an absolute link) or that is not a regular file."""
    base = root.path.resolve()
    target = root.path / path.lstrip("/")
    probe = target
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent  # the deepest part that exists decides where the rest goes
    real = probe.resolve()
    if root.is_live:
        inside = True
    else:
        inside = real == base or base in real.parents
    if not inside or ".." in Path(path).parts:
        raise InputError(f"refusing to write {path}: it resolves outside {root.label} ({real})")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise InputError(f"refusing to write {path}: it is a link or not a regular file")
    return target


def _atomic(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data[: len(data) // 2])
            _crash_point("mid-write")
            f.write(data[len(data) // 2:])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        _crash_point("before-rename")
        os.replace(tmp, target)
        dfd = os.open(target.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise Failure(f"writing {target} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_sysctl(root: HostRoot, key: str, value: str) -> None:
    """Set a live sysctl (the kernel does its own atomicity), or an image's proc/sys file: through the
    same confinement as every other write (a symlinked proc/sys/net/netfilter in an image would send
    a plain open outside it), atomically with a rename."""
    rel = "proc/sys/" + key.replace(".", "/")
    if not root.is_live:
        _atomic(confined_target(root, rel), f"{value}\n".encode(), 0o644)
        return
    try:
        fd = os.open(root.path / rel, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "w") as f:
            f.write(f"{value}\n")
    except OSError as e:
        raise Failure(f"setting {key}={value} failed: {e.strerror or e}") from None


def replace_in(directory: str, name: str, body: bytes, mode: int = 0o644) -> str:
    """Write ``directory/name`` atomically: a new temp file with a random name that does not end like
    ``name`` (a collector globbing ``*.prom`` ignores it; O_EXCL: nothing planted in the folder is
    followed or overwritten), fsynced, then renamed over it. Failure (one line) when it cannot."""
    target = os.path.join(directory, name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise Failure(f"cannot write {target}: {e.strerror}") from None
    return target


def lock_dir(directory: str, name: str, what: str) -> int:
    """Take ``directory/name``'s exclusive lock, held by the returned fd until the process ends (it
    holds our pid); Failure (one line) when another process (``what``) holds it."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise Failure(f"--dir {directory}: cannot open its lock {name}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise Failure(f"--dir {directory}: another {what} (pid {holder}) writes there; "
                      "one recorder per directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def make_private_dir(path: str) -> None:
    """Create a folder (mode 0700) unless it exists; UsageError (one line) when it is not a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--dir {path}: not a directory")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--dir {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--dir {path}: not writable")
