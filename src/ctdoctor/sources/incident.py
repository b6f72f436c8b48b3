"""An incident bundle ``record`` wrote, as ``incidents`` reads it: only its ``incident.json``; and the
recent history of every netns's count a running recorder keeps in its folder (``history.json``), as
``status --watch`` reads it to start its trend.

A bundle from an incidents folder is untrusted (anyone who could write there could craft one):
incident.json is the first member ``record`` writes, so it is looked for only that far. So is the
history: read only while a recorder holds the folder's lock, only when recent, small, a regular file
(never a symlink), and well formed; anything else is ignored."""

from __future__ import annotations

import json
import math
import os
import stat
import tarfile
import time
from typing import Any

from ctdoctor.errors import InputError

INCIDENT = "ctdoctor/incident.json"
MAX_MEMBERS = 64
MAX_SCAN = 64 << 20  # bytes of the uncompressed tar read while looking for it
MAX_INCIDENT = 4 << 20
MAX_SECONDS = 5.0

DEFAULT_DIR = "/var/lib/ctdoctor/incidents"  # where the documented ``ctdoctor record --dir`` writes
LOCK_NAME = ".ctdoctor-record.lock"  # held (flock) by the recorder writing a folder
HISTORY_NAME = "history.json"
HISTORY_FORMAT = "ctdoctor-record-history"
MAX_HISTORY_BYTES = 2 << 20
MAX_HISTORY_NETNS = 10000
MAX_HISTORY_SAMPLES = 60
MAX_HISTORY_AGE = 600.0  # seconds: an older sample says nothing about now


def read_incident(path: str) -> dict[str, Any]:
    """incident.json of a bundle, read without following links, without blocking on a FIFO, and
    within member, byte and time limits; InputError (one line) for anything else."""
    base = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{base}: {'a symlink: not followed' if e.errno == 40 else e.strerror}") from None
    f = os.fdopen(fd, "rb")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{base}: not a regular file")
        deadline = time.monotonic() + MAX_SECONDS
        with tarfile.open(fileobj=f, mode="r:gz") as tf:
            for n in range(MAX_MEMBERS):
                m = tf.next()
                if m is None:
                    break
                if m.isfile() and m.name.split("/", 1)[-1] == INCIDENT:
                    if m.size > MAX_INCIDENT:
                        raise InputError(f"{base}: incident.json is too large ({m.size} bytes)")
                    data = tf.extractfile(m)
                    doc = json.loads(data.read(MAX_INCIDENT) if data else b"{}")
                    if not isinstance(doc, dict):
                        raise InputError(f"{base}: incident.json is not a JSON object")
                    return doc
                if m.offset_data + max(m.size, 0) > MAX_SCAN or time.monotonic() > deadline:
                    raise InputError(f"{base}: no {INCIDENT} in its first {n + 1} members")
            else:
                raise InputError(f"{base}: no {INCIDENT} in its first {MAX_MEMBERS} members")
    except InputError:
        raise
    except (OSError, tarfile.TarError, EOFError, ValueError, RecursionError, MemoryError) as e:
        raise InputError(f"{base}: not a readable incident bundle ({type(e).__name__}: {str(e)[:120]})") from None
    finally:
        f.close()
    raise InputError(f"{base}: no {INCIDENT} in it")


def recorder_running(directory: str) -> bool:
    """Whether a recorder holds ``directory``'s lock now: the lock file (a regular file, not followed) is
    in /proc/locks with a FLOCK on it. The lock is never taken here, so a recorder starting at the same
    moment never finds it held."""
    try:
        st = os.lstat(os.path.join(directory, LOCK_NAME))
        if not stat.S_ISREG(st.st_mode):
            return False
        with open("/proc/locks", "rb") as f:
            text = f.read(4 << 20).decode("ascii", "replace")
    except OSError:
        return False
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any("->" not in ln and ln.split()[1:2] == ["FLOCK"] and ident in ln.split() for ln in text.splitlines())


def _read_small(path: str, limit: int) -> bytes | None:
    """A regular file's bytes, not following a symlink, not blocking on a FIFO; None when it is not one
    or is larger than ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def parse_history(data: bytes, now: float | None = None) -> dict[str, list[tuple[float, int]]]:
    """``{netns: [(time, count), ...]}`` (oldest first) from a history file's bytes; {} when it is not one
    a recorder wrote lately (junk, another format, written over ``MAX_HISTORY_AGE`` ago or in the
    future). Samples that are not (time, count >= 0) are left out."""
    now = time.time() if now is None else now
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != HISTORY_FORMAT or not isinstance(doc.get("netns"), dict):
        return {}
    written = _num(doc.get("written"))
    if written is None or not now - MAX_HISTORY_AGE <= written <= now + 5:
        return {}
    out: dict[str, list[tuple[float, int]]] = {}
    for name, samples in list(doc["netns"].items())[:MAX_HISTORY_NETNS]:
        if not isinstance(name, str) or not name or len(name) > 255 or not isinstance(samples, list):
            continue
        got: list[tuple[float, int]] = []
        for smp in samples[-MAX_HISTORY_SAMPLES:]:
            if not isinstance(smp, list) or len(smp) < 2:
                continue
            t, c = _num(smp[0]), _num(smp[1])
            if t is None or c is None or c < 0 or c != int(c) or not now - MAX_HISTORY_AGE <= t <= written + 5:
                continue
            if got and t <= got[-1][0]:
                continue  # time goes forward
            got.append((t, int(c)))
        if got:
            out[name] = got
    return out


def recorder_history(directory: str, now: float | None = None) -> dict[str, list[tuple[float, int]]]:
    """The recent count of every netns a recorder running on ``directory`` keeps there (see
    ``parse_history``); {} when no recorder holds the folder or its history is old, broken or hostile."""
    if not recorder_running(directory):
        return {}
    data = _read_small(os.path.join(directory, HISTORY_NAME), MAX_HISTORY_BYTES)
    return parse_history(data, now) if data is not None else {}
