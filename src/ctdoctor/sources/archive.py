"""Safe unpacking of host-image archives (.tar, .tar.gz, .tar.xz).

A customer's tarball is untrusted input: members with absolute paths, `..`
components, links that point outside, device files, too many or too large
members are refused *before* anything is written, and what is written goes
only into a private temporary directory that is removed at exit.
"""

from __future__ import annotations

import atexit
import lzma
import zlib
import os
import posixpath
import shutil
import tarfile
import tempfile

from ctdoctor.errors import InputError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")

# Generous for a sosreport, small enough that a bomb cannot fill the disk.
MAX_MEMBER_BYTES = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_MEMBER", 2 << 30))
MAX_TOTAL_BYTES = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_TOTAL", 8 << 30))
MAX_MEMBERS = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_MEMBERS", 500_000))


def is_archive(path: str) -> bool:
    return path.endswith(ARCHIVE_SUFFIXES)


def _norm_member(name: str) -> str:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"archive member {name!r} has an absolute path; refusing to unpack")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise InputError(f"archive member {name!r} escapes the archive with '..'; refusing to unpack")
    return norm


def _check_members(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """The members safe to unpack; raises InputError for a hostile archive.

    Absolute symlink targets (``etc/localtime -> /usr/share/...`` in hand-made
    tarballs) are left out rather than refused: they would point outside the
    image, and links that leave the image are never followed anyway.
    """
    keep = []
    if len(members) > MAX_MEMBERS:
        raise InputError(f"archive has {len(members)} members, more than the limit {MAX_MEMBERS}")
    total = 0
    for m in members:
        name = _norm_member(m.name)
        if m.isdev() or m.isfifo():
            raise InputError(f"archive member {m.name!r} is a device or fifo; refusing to unpack")
        if m.size > MAX_MEMBER_BYTES:
            raise InputError(
                f"archive member {m.name!r} is {m.size} bytes, over the per-member limit {MAX_MEMBER_BYTES}"
            )
        total += m.size
        if total > MAX_TOTAL_BYTES:
            raise InputError(f"archive unpacks to more than the limit of {MAX_TOTAL_BYTES} bytes")
        if m.issym() or m.islnk():
            target = m.linkname
            if target.startswith("/"):
                if m.issym():
                    continue
                raise InputError(f"archive link {m.name!r} points to absolute path {target!r}; refusing to unpack")
            base = posixpath.dirname(name) if m.issym() else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if resolved == ".." or resolved.startswith("../"):
                raise InputError(f"archive link {m.name!r} -> {target!r} points outside the archive; refusing to unpack")
        keep.append(m)
    return keep


def unpack(path: str) -> str:
    """Unpack `path` into a private temp dir and return that directory."""
    try:
        tf = tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable tar archive ({e})") from None
    dest = tempfile.mkdtemp(prefix="ctdoctor-image-")
    os.chmod(dest, 0o700)
    atexit.register(shutil.rmtree, dest, True)
    try:
        with tf:
            try:
                members = tf.getmembers()
            except (tarfile.TarError, EOFError, OSError) as e:
                raise InputError(f"{path}: archive is truncated or corrupt ({e})") from None
            members = _check_members(members)
            try:
                # The 'data' filter is a second line of defence behind our own checks.
                tf.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as e:
                raise InputError(f"{path}: unsafe archive member ({e}); refusing to unpack") from None
            except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
                raise InputError(f"{path}: archive is truncated or corrupt ({e})") from None
    except InputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
