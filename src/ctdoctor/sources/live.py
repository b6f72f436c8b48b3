"""What a scrape reads, kept cheap whatever the table size (node_exporter #96).

Each netns's ``nf_conntrack_count`` and ``/proc/net/stat/nf_conntrack`` are opened
once *inside* that netns (a /proc/net or net sysctl file keeps the netns it was
opened in) and re-read with ``pread`` on every scrape: a few microseconds per
netns, no fork, no listing. The open files hold a reference on the netns, so
namespaces are re-discovered every few seconds and the files of one that went
away are closed (its series disappear; the kernel can then free it).

The kernel log is followed from ``/dev/kmsg`` in a thread, so every table-full
line is counted once, as it comes, and tied to the netns it names.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ctdoctor.model.pods import Pod
from ctdoctor.model.samples import Sample
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources import pods as podmod
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.kernlog import TABLE_FULL_RE
from ctdoctor.sources.stats import StatsParseError, parse_proc_stat
from ctdoctor.sources.system import boot_time, parse_kernel_release

COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
STAT = "/proc/net/stat/nf_conntrack"
MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
BUCKETS = "/proc/sys/net/netfilter/nf_conntrack_buckets"
OSRELEASE = "/proc/sys/kernel/osrelease"
DOMAINNAME = "/proc/sys/kernel/domainname"


def _read_small(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def kernel_release() -> tuple[int, int, int] | None:
    """The running kernel's version, or None when it cannot be read."""
    return parse_kernel_release(_read_small(OSRELEASE))


def domainname() -> str:
    """The NIS domain name as ``uname`` shows it (``(none)`` when unset or unreadable)."""
    return (_read_small(DOMAINNAME) or "").strip() or "(none)"


def _pread_int(fd: int | None) -> int | None:
    if fd is None:
        return None
    try:
        return int(os.pread(fd, 64, 0))
    except (OSError, ValueError):
        return None


@dataclass
class Handle:
    ref: nsmod.NetnsRef
    count_fd: int | None = None
    stat_fd: int | None = None
    error: str = ""
    retry: bool = False  # the error may pass (no fd or thread to spare): open it again at the next discovery
    born_mono: float = 0.0  # seconds since boot when the netns (its nsfs inode) appeared
    pod: Any = None  # sources.pods.Pod of the pod that holds it, resolved once when it is found

    def close(self) -> None:
        for fd in (self.count_fd, self.stat_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.count_fd = self.stat_fd = None


def parse_wanted(text: str | None) -> list[str] | None:
    """``--netns``: None or 'all' -> every netns; else the listed names (init, an ip-netns name, pid:N, inode)."""
    if not text or text.strip() == "all":
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


class NetnsReader:
    """The namespaces the exporter reports, with their files held open."""

    def __init__(self, wanted: list[str] | None, *, proc: str = "/proc", run_netns: str = "/run/netns"):
        self.wanted = wanted
        self.proc, self.run_netns = proc, run_netns
        self._lock = threading.Lock()
        self._discover_lock = threading.Lock()  # the discovery loop and the log follower may both ask
        self._handles: dict[int, Handle] = {}  # inode -> handle
        with open("/proc/uptime") as f:
            self._boot = boot_time(f.read()) or 0.0
        self.limit_fd = self._open_here(MAX)
        self.buckets_fd = self._open_here(BUCKETS)
        self.discovered_at = 0.0
        self.host_root: str | None = None  # --host-root: where runtime metadata names pods
        self.starved: str | None = None  # why the last discovery could not run (no fd to spare)

    @staticmethod
    def _open_here(path: str) -> int | None:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None

    def _selected(self, refs: list[nsmod.NetnsRef]) -> list[nsmod.NetnsRef]:
        if self.wanted is None:
            return refs
        out = []
        for r in refs:
            if r.name in self.wanted or str(r.inode) in self.wanted or (r.is_init and "init" in self.wanted):
                out.append(r)
        return out

    def _open(self, ref: nsmod.NetnsRef) -> Handle:
        h = Handle(ref)
        try:
            h.born_mono = os.stat(ref.path).st_ctime - self._boot
        except OSError:
            pass
        for attr, path in (("count_fd", COUNT), ("stat_fd", STAT)):
            try:
                setattr(h, attr, nsmod.open_in(ref, path))
            except FileNotFoundError:
                pass
            except PermissionError:
                h.error = ("entering this netns needs root (CAP_SYS_ADMIN)" if os.geteuid() != 0 else
                           "entering this netns was refused (EPERM): the exporter lacks CAP_SYS_ADMIN")
                break
            except OSError as e:
                h.error = f"{path}: {e.strerror or e}"[:200]
                # out of fds, threads or memory: the next discovery tries again; anything else stays
                h.retry = e.errno in (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM, errno.EINTR)
                break
        if h.error:
            h.close()
        return h

    def rediscover(self) -> None:
        """Find the namespaces again: open the new ones, close the files of the ones gone."""
        with self._discover_lock:
            self._rediscover()

    def rediscover_soon(self, min_gap: float = 1.0) -> None:
        """Rediscover unless that was done less than ``min_gap`` seconds ago (a burst of log lines)."""
        if time.time() - self.discovered_at >= min_gap:
            self.rediscover()

    def _rediscover(self) -> None:
        try:
            refs = self._selected(nsmod.discover(self.proc, self.run_netns))
        except OSError as e:  # out of fds or memory: keep what is open, say why once, try again next time
            if self.starved != e.strerror:
                print(f"ctdoctor exporter: cannot look for namespaces now ({e.strerror}); "
                      "serving the ones already open", file=sys.stderr, flush=True)
            self.starved = e.strerror
            return
        self.starved = None
        with self._lock:
            current = dict(self._handles)
        new: dict[int, Handle] = {}
        fresh = [r for r in refs if r.inode not in current]
        pods = self._pods(fresh) if fresh else {}
        for ref in refs:
            h = current.pop(ref.inode, None)
            if h is not None and h.ref.name != ref.name:  # renamed (e.g. now in /run/netns): keep the files
                h.ref = ref
            if h is not None and h.retry:  # it failed for want of a resource: try again
                pod = h.pod
                h = self._open(ref)
                h.pod = pod
            if h is None:
                h = self._open(ref)
                h.pod = pods.get(ref.inode)
            new[ref.inode] = h
        with self._lock:  # a scrape holds this lock while it reads, so no fd is closed under it
            self._handles = new
            for h in current.values():
                h.close()
            self.discovered_at = time.time()

    def _pods(self, refs: list[nsmod.NetnsRef]) -> dict[int, Pod]:
        """Pods of newly found namespaces (once per netns: a pod never changes its netns)."""
        live = HostRoot.live()
        live.host_root = self.host_root
        try:
            return podmod.for_refs(refs, live.host_files(), live)
        except OSError:
            return {}

    def name_of(self, inode: int, mono: float | None = None) -> str | None:
        """The current name of the netns with this inode; None if unknown, or born after ``mono``
        (the kernel reuses inodes: an older line naming it was about an earlier namespace)."""
        with self._lock:
            h = self._handles.get(inode)
        if h is None:
            return None
        if mono is not None and h.born_mono and mono < h.born_mono - 2:
            return None
        return h.ref.name

    def names(self) -> list[str]:
        with self._lock:
            return [h.ref.name for h in self._handles.values()]

    def sample(self) -> tuple[list[Sample], int | None, int | None]:
        """Every netns's count and summed stats, plus the global limit and buckets."""
        out = []
        with self._lock:
            handles = list(self._handles.values())
            for h in handles:
                s = Sample(h.ref.name, h.ref.inode, f"pod {h.pod.label}" if h.pod else h.ref.owner)
                if h.pod is not None:
                    s.namespace, s.pod, s.container = h.pod.namespace, h.pod.name, h.pod.container
                if h.error:
                    s.readable, s.error = False, h.error
                    out.append(s)
                    continue
                raw = None
                if h.stat_fd is not None:
                    try:
                        raw = os.pread(h.stat_fd, 1 << 20, 0)
                    except OSError as e:
                        s.error = f"{STAT}: {e}"
                s.count = _pread_int(h.count_fd)
                if raw:
                    try:
                        st = parse_proc_stat(raw.decode("ascii", "replace"))
                        s.stats = st.sums
                        if s.count is None:
                            s.count = st.entries
                    except StatsParseError as e:
                        s.error = str(e)
                out.append(s)
            limit, buckets = _pread_int(self.limit_fd), _pread_int(self.buckets_fd)
        return out, limit, buckets

    def close(self) -> None:
        with self._lock:
            for h in self._handles.values():
                h.close()
            self._handles = {}
            for fd in (self.limit_fd, self.buckets_fd):
                if fd is not None:
                    os.close(fd)
            self.limit_fd = self.buckets_fd = None


# ---- the kernel log ------------------------------------------------------------------------------

UNATTRIBUTED, UNKNOWN = "unattributed", "unknown"


def parse_kmsg_record(rec: bytes) -> tuple[float, str] | None:
    """(seconds since boot, message) of one /dev/kmsg record: ``PRI,SEQ,USEC,FLAGS;MESSAGE``."""
    head, sep, rest = rec.partition(b";")
    if not sep:
        return None
    parts = head.split(b",")
    if len(parts) < 3 or not parts[2].isdigit():
        return None
    msg = rest.split(b"\n", 1)[0].decode("utf-8", "replace")
    return int(parts[2]) / 1e6, msg


class KernelLogFollower:
    """Counts table-full kernel log lines per netns, from /dev/kmsg, in a thread."""

    def __init__(self, reader: NetnsReader, names_init: bool, *, path: str = "/dev/kmsg"):
        # names_init: the kernel names the netns in the line (6.18+), so a line without one is init's
        self.reader, self.names_init, self.path = reader, names_init, path
        self.counts: dict[object, int] = {}  # inode, or a label for lines with no (known) inode
        self.readable: bool | None = None
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._full_now: list[str] = []  # namespaces at the limit at the last scrape (older kernels)
        # the conntrack lines seen, (seconds since boot, text): the refresh's kernel log, no dmesg run
        self.recent: deque[tuple[float, str]] = deque(maxlen=4000)

    def set_full_now(self, names: list[str]) -> None:
        self._full_now = names

    def _open(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            self.readable, self.error = False, f"{self.path}: {e.strerror} (needs CAP_SYSLOG, or kernel.dmesg_restrict=0)"
            return None
        self.readable = True
        return fd

    def take(self, rec: bytes, live: bool) -> None:
        got = parse_kmsg_record(rec)
        if got is None:
            return
        mono, msg = got
        if "conntrack" in msg or "nf_ct" in msg:
            self.recent.append((mono, msg))
        if "table full" not in msg:
            return
        m = TABLE_FULL_RE.search(msg)
        if not m:
            return
        key: object
        if m.group("netns"):
            ino = int(m.group("netns"))
            name = self.reader.name_of(ino, mono)
            if name is None and live:
                self.reader.rediscover_soon()  # a namespace made since the last discovery
                name = self.reader.name_of(ino, mono)
            key = ino if name is not None else UNKNOWN
        elif self.names_init:
            key = nsmod.INIT
        elif live and len(self._full_now) == 1:  # older kernels name no netns: the one at the limit now
            key = ("name", self._full_now[0])
        else:
            key = UNATTRIBUTED
        self.counts[key] = self.counts.get(key, 0) + 1

    def drain(self, fd: int, live: bool) -> None:
        """Read every record available now."""
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # records were overwritten before we read them: go on
                continue
            except OSError as e:
                self.error = str(e)
                return
            if not rec:
                return
            self.take(rec, live)

    def dmesg_text(self) -> str | None:
        """The conntrack lines followed so far as dmesg prints them; None when /dev/kmsg is not read."""
        if not self.readable:
            return None
        return "".join(f"[{mono:12.6f}] {msg}\n" for mono, msg in list(self.recent))

    def read_once(self) -> None:
        """Count the table-full lines in the ring buffer now (for --once)."""
        fd = self._open()
        if fd is None:
            return
        try:
            self.drain(fd, live=False)
        finally:
            os.close(fd)

    def start(self) -> None:
        fd = self._open()
        if fd is None:
            return
        self.drain(fd, live=False)  # what the ring buffer holds from before we started

        def loop() -> None:
            poller = select.poll()  # not select(): past 1024 open fds (two per netns) it cannot wait
            poller.register(fd, select.POLLIN)
            try:
                while not self._stop.is_set():
                    if poller.poll(500):
                        self.drain(fd, live=True)
            finally:
                os.close(fd)

        self._thread = threading.Thread(target=loop, name="kmsg", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    def by_name(self) -> dict[str, int]:
        """Counts by the netns's current name; namespaces gone since are left out."""
        out: dict[str, int] = {}
        for key, n in list(self.counts.items()):
            if isinstance(key, int):
                name = self.reader.name_of(key)
                if name is None:
                    continue
            elif isinstance(key, tuple):
                name = key[1]
            else:
                name = str(key)
            out[name] = out.get(name, 0) + n
        return out
