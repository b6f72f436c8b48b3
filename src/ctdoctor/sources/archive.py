"""Safe unpacking of host-image archives (.tar, .tar.gz, .tar.xz).

A customer's tarball is untrusted input: members with absolute paths, `..`
components, links that point outside, device files, too many or too large
members are refused *before* anything is written, and what is written goes
only into a private temporary directory that is removed at exit.
"""

from __future__ import annotations

import atexit
import gzip
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib

from ctdoctor.errors import InputError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")

# Generous for a sosreport, small enough that a bomb cannot fill the disk.
MAX_MEMBER_BYTES = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_MEMBER", str(2 << 30)))
MAX_TOTAL_BYTES = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_TOTAL", str(8 << 30)))
MAX_MEMBERS = int(os.environ.get("CTDOCTOR_ARCHIVE_MAX_MEMBERS", "200000"))
_unpacked: dict[str, str] = {}  # archive path -> its unpacked folder: unpacked once per process


def is_archive(path: str) -> bool:
    return path.endswith(ARCHIVE_SUFFIXES)


def _norm_member(name: str) -> str:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"archive member {name!r} has an absolute path; refusing to unpack")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise InputError(f"archive member {name!r} escapes the archive with '..'; refusing to unpack")
    return norm


def _check_member(m: tarfile.TarInfo, count: int, total: int) -> bool:
    """Whether to unpack ``m`` (False: leave it out); raises InputError for a hostile archive.
    Called while the headers stream by, so limits hold before the whole index is read.

    Absolute symlink targets (``etc/localtime -> /usr/share/...`` in hand-made tarballs) are
    left out rather than refused: they would point outside the image, and links that leave
    the image are never followed anyway.
    """
    if count > MAX_MEMBERS:
        raise InputError(f"archive has more than {MAX_MEMBERS} members, the limit")
    name = _norm_member(m.name)
    if m.isdev() or m.isfifo():
        raise InputError(f"archive member {m.name!r} is a device or fifo; refusing to unpack")
    if m.size > MAX_MEMBER_BYTES:
        raise InputError(f"archive member {m.name!r} is {m.size} bytes, over the per-member limit {MAX_MEMBER_BYTES}")
    if total > MAX_TOTAL_BYTES:
        raise InputError(f"archive unpacks to more than the limit of {MAX_TOTAL_BYTES} bytes")
    if m.issym() or m.islnk():
        target = m.linkname
        if target.startswith("/"):
            if m.issym():
                return False
            raise InputError(f"archive link {m.name!r} points to absolute path {target!r}; refusing to unpack")
        base = posixpath.dirname(name) if m.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise InputError(f"archive link {m.name!r} -> {target!r} points outside the archive; refusing to unpack")
    return True


_CORRUPT = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


def _verify_stream(path: str) -> None:
    """Decompress the whole file once: a flipped byte fails the gzip CRC or the xz check, a cut
    file ends early. tarfile alone would read such an archive as a shorter one."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
    f: gzip.GzipFile | lzma.LZMAFile
    if magic[:2] == b"\x1f\x8b":
        f = gzip.open(path, "rb")  # noqa: SIM115 - closed in the finally below
    elif magic == b"\xfd7zXZ\x00":
        f = lzma.open(path, "rb")  # noqa: SIM115 - closed in the finally below
    else:
        return  # a plain .tar: the tail check below covers it
    limit = MAX_TOTAL_BYTES + (MAX_MEMBERS + 2) * 1024
    total = 0
    try:
        with f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise InputError(f"{path}: archive unpacks to more than the limit of {MAX_TOTAL_BYTES} bytes")
    except InputError:
        raise
    except _CORRUPT as e:
        raise InputError(f"{path}: archive truncated or corrupt ({e})") from None


def _check_tail(tf: tarfile.TarFile, path: str) -> None:
    """After the last member only zero blocks may follow; anything else is a header tarfile
    could not read, i.e. a damaged archive that would otherwise look complete."""
    try:
        assert tf.fileobj is not None
        tf.fileobj.seek(tf.offset)
        rest = tf.fileobj.read(1 << 20)
    except _CORRUPT as e:
        raise InputError(f"{path}: archive truncated or corrupt ({e})") from None
    if rest.strip(b"\x00"):
        raise InputError(f"{path}: archive truncated or corrupt (unreadable data after member {tf.offset})")


def unpack(path: str) -> str:
    """Unpack `path` into a private temp dir (once per process) and return that directory."""
    key = os.path.abspath(path)
    if key in _unpacked and os.path.isdir(_unpacked[key]):
        return _unpacked[key]
    try:
        _verify_stream(path)
        tf = tarfile.open(path, "r:*")  # noqa: SIM115 - closed after the unpack below
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except InputError:
        raise
    except _CORRUPT as e:
        raise InputError(f"{path}: not a readable tar archive ({e})") from None
    dest = tempfile.mkdtemp(prefix="ctdoctor-image-")
    os.chmod(dest, 0o700)
    atexit.register(shutil.rmtree, dest, True)  # also on SIGTERM/SIGHUP: see ctdoctor.cleanup
    try:
        with tf:
            keep = []
            count = total = 0
            try:
                for m in tf:  # headers are read one by one: limits apply as they stream by
                    count += 1
                    total += m.size
                    if _check_member(m, count, total):
                        keep.append(m)
            except _CORRUPT as e:
                raise InputError(f"{path}: archive truncated or corrupt ({e})") from None
            _check_tail(tf, path)
            try:
                # The 'data' filter is a second line of defence behind our own checks.
                tf.extractall(dest, members=keep, filter="data")
            except tarfile.FilterError as e:
                raise InputError(f"{path}: unsafe archive member ({e}); refusing to unpack") from None
            except _CORRUPT as e:
                raise InputError(f"{path}: archive truncated or corrupt ({e})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    _unpacked[key] = dest
    return dest
