"""Capture a host image: the files and command outputs ctdoctor reads, in the layout ``--root`` reads.

What is copied is declared and read by ``sources.capture`` (like a sos plugin:
``COPY``, ``COMMANDS``); offline reading (HostRoot, Snapshot) uses the very same
paths, so a bundle read with ``--root`` gives what the live host gave. This module
anonymizes and writes the archive. Non-initial namespaces go under ``ctdoctor/netns/<name>/`` (their own
``proc/...`` files and ``sos_commands/``), and ip-netns-named ones are also
written under the names sosreport uses (``ip_netns_exec_<ns>_<cmd>``).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ctdoctor import __version__
from ctdoctor.errors import Failure, InputError
from ctdoctor.listing.formats import SAMPLE_MARK
from ctdoctor.sources import capture
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources import pods as podmod
from ctdoctor.sources.hostroot import HostRoot

STATS_INTERVAL = 1.0


class Step(NamedTuple):
    """What ``collect`` is doing, for a progress display: step ``done`` of ``total``; while a listing is
    read, its ``bytes`` and ``entries`` so far; while the archive is written, ``bytes`` of ``bytes_total``."""

    what: str
    done: int
    total: int
    bytes: int = 0
    bytes_total: int = 0
    entries: int = 0


@dataclass
class Bundle:
    """Members to write: name -> bytes (small) or a path of a spooled temp file (listings)."""

    top: str
    members: dict[str, bytes] = field(default_factory=dict)
    spooled: dict[str, str] = field(default_factory=dict)
    spool_dir: str = ""  # where spooled listings go: the output's folder

    def add(self, rel: str, data: bytes | str) -> None:
        self.members[rel] = data.encode() if isinstance(data, str) else data


class Anonymizer:
    """Maps addresses consistently: the same input address gives the same output address.

    Loopback, unspecified and broadcast addresses are kept (they say nothing
    about the customer); IPv4 goes to 10.0.0.0/8 and IPv6 to fd00::/8 in
    order of first appearance; the printed form (full or compressed IPv6) is kept.
    """

    def __init__(self) -> None:
        self.v4: dict[str, str] = {}
        self.v6: dict[str, str] = {}
        self.words: dict[str, str] = {}
        self._re_names: re.Pattern[str] | None = None
        self._re4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
        self._re6 = re.compile(r"(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")

    def _map4(self, m: re.Match[str]) -> str:
        a = m.group(0)
        try:
            ip = ipaddress.IPv4Address(a)
        except ValueError:
            return a
        if ip.is_loopback or ip.is_unspecified or a == "255.255.255.255" or ip.is_multicast:
            return a
        if a not in self.v4:
            n = len(self.v4) + 1
            self.v4[a] = str(ipaddress.IPv4Address(0x0A000000 + n))
        return self.v4[a]

    def _map6(self, m: re.Match[str]) -> str:
        a = m.group(0)
        try:
            ip = ipaddress.IPv6Address(a)
        except ValueError:
            return a
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
            return a
        key = ip.compressed
        if key not in self.v6:
            n = len(self.v6) + 1
            self.v6[key] = str(ipaddress.IPv6Address((0xFD00 << 112) + n))
        out = ipaddress.IPv6Address(self.v6[key])
        return out.exploded if len(a) == 39 else out.compressed

    def set_names(self, words: dict[str, str]) -> None:
        """Host and namespace names -> their stand-ins, matched as whole names (one compiled pattern)."""
        self.words = dict(words)
        alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._re_names = re.compile(r"(?<![\w.-])(?:" + alt + r")(?![\w-])") if alt else None

    def _names(self, s: str) -> str:
        if self._re_names is None:
            return s
        words = self.words
        return self._re_names.sub(lambda m: words[m.group(0)], s)

    def text(self, s: str) -> str:
        return self._names(self._re4.sub(self._map4, self._re6.sub(self._map6, s)))

    def data(self, b: bytes) -> bytes:
        return self.text(b.decode("utf-8", "replace")).encode()

    def names(self, b: bytes) -> bytes:
        return self._names(b.decode("utf-8", "replace")).encode()


def _host_names(hostname: str) -> list[str]:
    """The FQDN and its short form, longest first (so the FQDN is replaced whole)."""
    names = {hostname, hostname.split(".")[0]} if hostname and hostname not in ("localhost", "(none)") else set()
    return sorted((n for n in names if len(n) >= 2), key=len, reverse=True)


def _check_output(output: str) -> None:
    if not output.endswith((".tar.gz", ".tgz")):
        raise InputError(f"-o {output}: the bundle is a .tar.gz file; give a name ending in .tar.gz")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise InputError(f"-o {output}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"-o {output}: cannot write to {out_dir} (permission denied)")


def _netns_aliases(refs: list[nsmod.NetnsRef], anonymize_netns: bool) -> dict[str, str]:
    """ip-netns / pid names -> netns-N stand-ins (--anonymize-netns); init keeps its name."""
    if not anonymize_netns:
        return {}
    others = [r for r in refs if not r.is_init]
    return {r.name: f"netns-{i}" for i, r in enumerate(others, 1)}


def _anonymize(b: Bundle, anon: Anonymizer) -> None:
    for rel in list(b.members):
        if rel == "ctdoctor/meta.json":
            continue
        if rel.startswith(("proc/sys/", "sys/")) or "/proc/sys/" in rel:
            b.members[rel] = anon.names(b.members[rel])
            continue
        b.members[rel] = anon.data(b.members[rel])
    for rel in ("proc/sys/kernel/hostname", "etc/hostname"):
        if rel in b.members:
            b.members[rel] = b"anonymized\n"


def collect(output: str, *, entries: bool = True, anonymize: bool = False, anonymize_netns: bool = False,
            progress: Callable[[Step], None] | None = None, only: set[str] | None = None,
            entries_for: set[str] | None = None, extra: dict[str, bytes | Callable[[], bytes]] | None = None,
            on_listing: Callable[[nsmod.NetnsRef, str], None] | None = None,
            listing_limit: int | None = None, host_root: str | None = None) -> dict[str, Any]:
    """Write the bundle to ``output`` (a .tar.gz) atomically. Returns meta.

    ``only``: the namespaces to include (init's host files are always there); ``entries_for``:
    whose listings to include (default: all included); ``extra``: more members, bytes or a
    callable giving them (``record``'s incident.json); ``on_listing(ref, path)``: called with each
    spooled listing before it is cut to ``listing_limit`` bytes (at a line boundary); ``progress``: told
    each ``Step`` (and the bytes and entries as a listing is read and as the archive is written)."""
    _check_output(output)
    anon = Anonymizer() if anonymize else None
    hostname = capture.hostname()
    b = Bundle(top=f"ctdoctor-{'anonymized' if anon else hostname}-{time.strftime('%Y%m%d-%H%M%S')}",
               spool_dir=os.path.dirname(os.path.abspath(output)))
    found = nsmod.discover()
    refs = [r for r in found if only is None or r.is_init or r.name in only]
    refs, _gone = nsmod.pin(refs)  # a pod deleted mid-capture stays readable to the end (noted as vanished)
    live = HostRoot.live()
    live.host_root = host_root
    pods = {} if anonymize_netns else podmod.for_refs(refs, live.host_files(), live)
    alias = _netns_aliases(refs, anonymize_netns)
    if anon:
        # every copy of the host's names (uname -a, sysctl -a's kernel.hostname, syslog lines) and,
        # with --anonymize-netns, of the namespace names
        anon.set_names({**dict.fromkeys(_host_names(hostname), "anonymized"), **alias})
    listed = [r for r in refs if entries and (entries_for is None or r.name in entries_for)]
    tick = _Ticker(progress, 5 + len(refs) + len(listed))
    tick("the first sample of the counters")

    # 1. first stats sample of every netns, so the second lands one interval later
    t0 = time.monotonic()
    first: dict[str, dict[str, bytes]] = {}
    vanished: list[str] = []
    for ref in list(refs):
        got = capture.read_in(ref, capture.NETNS_FILES, capture.NETNS_DIRS)
        if got is None:  # deleted between discovery and now (a pod went away): left out, and said so
            refs.remove(ref)
            vanished.append(alias.get(ref.name, ref.name))
        else:
            first[ref.name] = got
    tick("the host's files")
    # 2. host files and commands (init netns)
    for rel, data in capture.host_files().items():
        b.add(rel, data)
    tick("the host's commands")
    failed: dict[str, int] = {}
    for rel, text in capture.host_commands(failed).items():
        b.add(rel, text)
    # 3. per netns: files, commands, entries
    metas = []
    for ref in refs:
        shown = alias.get(ref.name, ref.name)
        if nsmod.gone(ref):
            vanished.append(shown)  # went away while we read the others: its first sample stays
        tick(f"netns {ref.name}")
        prefix = "" if ref.is_init else f"ctdoctor/netns/{shown}/"
        sos_name = shown if ref.owner == "ip netns" else None
        for rel, data in first[ref.name].items():
            b.add(prefix + rel, data)
        if not ref.is_init:
            for rel, text in capture.netns_commands(ref, prefix, shown, sos_name, failed).items():
                b.add(rel, text)
        if ref in listed:
            tick(f"the entries of netns {ref.name}")
            _listing(b, ref, prefix + capture.LISTING, anon, on_listing, listing_limit, tick)
        pod = pods.get(ref.inode)
        metas.append({"name": shown, "inode": ref.inode, "owner": "hidden" if alias else ref.owner,
                      "sos_name": sos_name, "born": capture.born(ref),
                      "pod": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
                              "container": pod.container} if pod else None})
    # 4. second stats sample
    tick("the second sample of the counters")
    interval = _second_sample(b, refs, alias, t0)
    meta = {
        "format": "ctdoctor-bundle", "format_version": 1, "ctdoctor": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anonymized": anonymize, "entries": entries,
        "stats_interval": round(interval, 3), "namespaces": metas,
        "failed_commands": failed, "boot_time": capture.boot_time(), "vanished": sorted(set(vanished)),
    }
    b.add("ctdoctor/meta.json", json.dumps(meta, indent=2))
    for rel, member in (extra or {}).items():
        b.add(rel, member() if callable(member) else member)  # a callable: known only once the listing was read
    if anon:
        _anonymize(b, anon)
    tick(f"writing {output}")
    _write_tar(b, output, lambda n, of: tick.more(bytes=n, bytes_total=of))
    return meta


class _Ticker:
    """Tells ``progress`` each step of ``collect`` (``tick(what)``) and the counts within it (``more``)."""

    def __init__(self, progress: Callable[[Step], None] | None, total: int) -> None:
        self.progress, self.total, self.done, self.what = progress, total, 0, ""

    def __call__(self, what: str) -> None:
        if self.what:
            self.done += 1
        self.what = what
        self.more()

    def more(self, **counts: int) -> None:
        if self.progress is not None:
            self.progress(Step(self.what, self.done, self.total, **counts))


def _listing(b: Bundle, ref: nsmod.NetnsRef, rel: str, anon: Anonymizer | None,
             on_listing: Callable[[nsmod.NetnsRef, str], None] | None, listing_limit: int | None,
             tick: _Ticker | None = None) -> None:
    """The netns's listing, spooled beside the bundle: on the disk the bundle goes to (never a full
    /tmp), and removed with it by whoever stops the capture. ``tick`` is told the bytes and entries read
    so far."""
    transform: Callable[[bytes], bytes] | None = anon.data if anon else None
    if tick is not None and tick.progress is not None:
        seen = [0, 0]
        inner, told = transform, tick

        def transform(chunk: bytes) -> bytes:  # whole lines: count them as they pass
            seen[0] += len(chunk)
            seen[1] += chunk.count(b"\n")
            told.more(bytes=seen[0], entries=seen[1])
            return inner(chunk) if inner is not None else chunk

    tmp = capture.spool_listing(ref, b.spool_dir or None, transform)
    if tmp is None:
        return
    b.spooled[rel] = tmp
    if on_listing is not None:
        on_listing(ref, tmp)
    if tmp and listing_limit is not None:
        _cut(tmp, listing_limit)


def _second_sample(b: Bundle, refs: list[nsmod.NetnsRef], alias: dict[str, str], t0: float) -> float:
    wait = STATS_INTERVAL - (time.monotonic() - t0)
    if wait > 0:
        time.sleep(wait)
    interval = time.monotonic() - t0
    for ref in refs:
        later = capture.read_stats(ref)
        if later is not None:
            b.add(f"ctdoctor/samples/{alias.get(ref.name, ref.name)}/nf_conntrack.stat", later)
    return interval




def _cut(path: str, limit: int) -> bool:
    """Keep about the first ``limit`` bytes of a listing, whole lines, under a first line that says it is
    a sample (readers skip it as they skip sosreport's cut first line). True if it was cut."""
    size = os.path.getsize(path)
    if size <= limit:
        return False
    with open(path, "rb") as f:
        head = f.read(limit)
        lines_total = head.count(b"\n")
        keep = head[:head.rfind(b"\n") + 1]
        while True:  # count the rest of the lines without holding them
            c = f.read(1 << 20)
            if not c:
                break
            lines_total += c.count(b"\n")
    kept = keep.count(b"\n")
    with open(path, "wb") as f:
        f.write(SAMPLE_MARK + f" the first {kept} of {lines_total} entries\n".encode())
        f.write(keep)
    return True


class _Counted(io.RawIOBase):
    """A spooled listing read into the archive, counting the bytes for a progress display."""

    def __init__(self, f: Any, told: Callable[[int], None]) -> None:
        self.f, self.told = f, told

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.f.read(n)
        self.told(len(data))
        return data


def _write_tar(b: Bundle, output: str, wrote: Callable[[int, int], None] | None = None) -> None:
    """Write to a temp file next to the output and rename: never a half-written bundle. ``wrote(bytes,
    of)`` is told the bytes put in so far of all."""
    out_dir = os.path.dirname(os.path.abspath(output))
    of = sum(len(v) for v in b.members.values()) + sum(os.path.getsize(p) for p in b.spooled.values()
                                                       if os.path.exists(p))
    done = 0

    def told(n: int) -> None:
        nonlocal done
        done += n
        if wrote is not None:
            wrote(done, of)

    fd, tmp = tempfile.mkstemp(prefix=".ctdoctor-bundle-", suffix=".tmp", dir=out_dir)
    now = time.time()
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tf:
            dirs = set()
            for rel in sorted(set(b.members) | set(b.spooled)):
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        ti = tarfile.TarInfo(f"{b.top}/{d}")
                        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, now
                        tf.addfile(ti)
                if rel in b.members:
                    data = b.members[rel]
                    ti = tarfile.TarInfo(f"{b.top}/{rel}")
                    ti.size, ti.mode, ti.mtime = len(data), 0o644, now
                    tf.addfile(ti, io.BytesIO(data))
                    told(len(data))
                else:
                    ti = tf.gettarinfo(b.spooled[rel], arcname=f"{b.top}/{rel}")
                    with open(b.spooled[rel], "rb") as f:
                        tf.addfile(ti, _Counted(f, told))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)  # may hold addresses: readable by the owner only
        os.replace(tmp, output)
    except OSError as e:
        raise Failure(f"writing {output} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        for p in b.spooled.values():
            if os.path.exists(p):
                os.unlink(p)
