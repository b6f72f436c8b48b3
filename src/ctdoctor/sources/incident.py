"""An incident bundle ``record`` wrote, as ``incidents`` reads it: only its ``incident.json``.

A bundle from an incidents folder is untrusted (anyone who could write there could craft one):
incident.json is the first member ``record`` writes, so it is looked for only that far."""

from __future__ import annotations

import json
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
