"""Views of a network namespace, one per kind of root: ``NetnsView`` answers "read this file / this
captured command inside that netns" for the live host (``LiveNetnsView``: a pinned netns, files read
by a thread that entered it), a ctdoctor bundle or a sosreport (``ImageNetnsView``). The snapshot
builder (``sources.snapshot``) turns their answers into plain facts.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

from ctdoctor.errors import InputError
from ctdoctor.listing.formats import FOOTER, is_sample
from ctdoctor.model.pods import Pod
from ctdoctor.model.stats import CpuStats
from ctdoctor.model.textsafe import clean
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.hostroot import Captured, HostRoot, mangle_command, run_command
from ctdoctor.sources.stats import StatsParseError, parse_proc_stat

STAT = "proc/net/stat/nf_conntrack"
LISTING = "proc/net/nf_conntrack"
NF_DIR = "proc/sys/net/netfilter"
# RHEL 5's ip_conntrack module: the same facts under their old names
LEGACY_STAT = "proc/net/stat/ip_conntrack"
LEGACY_LISTING = "proc/net/ip_conntrack"
LEGACY_NF_DIR = "proc/sys/net/ipv4/netfilter"
META = "ctdoctor/meta.json"


# (stream, source, tailed): an entry listing opened for reading; ``tailed``: sos kept only its tail
Listing = tuple[Any, str, bool]



class NetnsView:
    """Reads one netns's files and command outputs."""

    name: str
    pod: Pod | None = None

    def read_many(self, rels: list[str]) -> dict[str, tuple[str, str]]:
        """{rel: (text, source)} for those that exist."""
        raise NotImplementedError

    def listdir(self, rel: str) -> list[str]:
        raise NotImplementedError

    def capture(self, plugin: str, cmd: str) -> Captured | None:
        raise NotImplementedError

    def open_listing(self) -> Listing | None:
        """(binary stream, source, tailed) of the entry listing, or None."""
        raise NotImplementedError

    def prefetch(self, rels: list[str], dirs: list[str]) -> None:
        """Read these files and folders in one go (live: one fork into the netns, not one per file)."""

    def listing_footer(self) -> tuple[tuple[int, int, int], int] | None:
        """((major, minor, patch), entries shown) from the footer conntrack-tools writes under a saved
        ``conntrack -L`` listing; None for the kernel's own /proc listing or without a footer."""
        return None

    def sample_stats(self) -> CpuStats | None:
        """The stats file read again now (a second sample for rates); None where time stands still."""
        return None

    def read_now(self, rels: list[str]) -> dict[str, str]:
        """Files read again now (live); an image does not change: {}."""
        return {}

    def recorded_second_sample(self, notes: list[str]) -> tuple[CpuStats, float] | None:
        """(second stats sample, seconds after the first) that a capture recorded, if any."""
        return None

    def saved_rule_files(self) -> list[tuple[str, str]]:
        """(text, source) of rules saved on disk for a service to load (RHEL's /etc/sysconfig/iptables):
        read where the live ruleset was not captured."""
        return []

    def rule_listings(self) -> list[Captured]:
        """`iptables -t T -nvL` captures, for sosreports that kept no iptables-save."""
        return []


NFT_RULESET = "\x00nft -j list ruleset"  # the pseudo-file the prefetch fills with the ruleset (libnftables)


_SYSCTL_LOCK = threading.Lock()
_NO_LOCK = contextlib.nullcontext()


def _read_files_here(rels: list[str], listdirs: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Runs inside the target netns (forked child): read files and list dirs (and, for NFT_RULESET,
    the nft ruleset through libnftables: no exec)."""
    def here(rel: str) -> str:  # /proc/net follows the main thread: this task's netns is thread-self's
        return "/proc/thread-self/net/" + rel[len("proc/net/"):] if rel.startswith("proc/net/") else "/" + rel

    files: dict[str, str] = {}
    dirs: dict[str, list[str]] = {}
    if NFT_RULESET in rels:
        from ctdoctor.sources import nftlib  # ctypes: only a live read pays for it

        text = nftlib.ruleset_json()
        if text is not None:
            files[NFT_RULESET] = text
        rels = [r for r in rels if r != NFT_RULESET]
    for rel in rels:
        try:
            with open(here(rel), "rb") as f:
                files[rel] = f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            pass
    for d in listdirs:
        # /proc/sys: every netns's sysctl files share dcache hash chains and the kernel compares names
        # under one global lock (proc_sys_compare), so the directory is opened once and its files are
        # opened relative to it (one name looked up each, not four), one netns at a time (eight
        # threads at once spent 8 s of system time spinning on that lock at 1000 namespaces)
        with _SYSCTL_LOCK if d.startswith("proc/sys/") else _NO_LOCK:
            try:
                dfd = os.open(here(d), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                names = sorted(os.listdir(dfd))
                dirs[d] = names
                for n in names:
                    try:
                        fd = os.open(n, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
                    except OSError:
                        continue
                    try:
                        files[f"{d}/{n}"] = os.read(fd, 4096).decode("utf-8", "replace")
                    except OSError:  # a directory (nf_log), or not readable
                        pass
                    finally:
                        os.close(fd)
            finally:
                os.close(dfd)
    return files, dirs


class LiveNetnsView(NetnsView):
    def __init__(self, ref: nsmod.NetnsRef):
        self.ref = ref
        self.name = ref.name
        self._files: dict[str, str] = {}
        self._dirs: dict[str, list[str]] = {}
        self._absent: set[str] = set()  # asked for in a read inside the netns, and not there

    def prefetch(self, rels: list[str], dirs: list[str]) -> None:
        files, listed = nsmod.run_in_thread(self.ref, _read_files_here, rels, dirs)
        self._files.update(files)
        self._dirs.update(listed)
        self._absent.update(r for r in rels if r not in files)
        self._absent.update(f"{d}/{n}" for d, names in listed.items() for n in names if f"{d}/{n}" not in files)

    def read_many(self, rels: list[str]) -> dict[str, tuple[str, str]]:
        missing = [r for r in rels if r not in self._files and r not in self._absent]
        if missing:  # one more visit to the netns only for files not asked for yet
            files, _ = nsmod.run_in_thread(self.ref, _read_files_here, missing, [])
            self._files.update(files)
            self._absent.update(r for r in missing if r not in files)
        return {r: (self._files[r], "/" + r) for r in rels if r in self._files}

    def listdir(self, rel: str) -> list[str]:
        if rel not in self._dirs:
            self.prefetch([], [rel])
        return self._dirs.get(rel, [])

    def capture(self, plugin: str, cmd: str) -> Captured | None:
        if cmd == "nft -j list ruleset" and NFT_RULESET in self._files:  # read by the prefetch, in-process
            return Captured(self._files[NFT_RULESET], self._source(cmd))
        out = run_command(cmd, preexec_fn=nsmod.preexec_for(self.ref))
        if out is not None and out.status != 0:
            return None  # its output is an error message, not the data
        if out:
            out.source = self._source(cmd)
        return out

    def _source(self, cmd: str) -> str:
        """How evidence names a command run in this netns."""
        if self.ref.is_init:
            return cmd
        return f"ip netns exec {self.name} {cmd}" if self.ref.owner == "ip netns" else f"{cmd} (in netns {self.name})"

    def open_listing(self) -> Listing | None:
        try:
            return nsmod.stream_in(self.ref, "/" + LISTING), "/" + LISTING, False
        except OSError:
            return None

    def read_now(self, rels: list[str]) -> dict[str, str]:
        """These files read again now, inside the netns (never from the cache)."""
        files: dict[str, str]
        files, _ = nsmod.run_in_thread(self.ref, _read_files_here, rels, [])
        return files

    def sample_stats(self) -> CpuStats | None:
        files, _ = nsmod.run_in_thread(self.ref, _read_files_here, [STAT], [])
        if STAT not in files:
            return None
        try:
            return parse_proc_stat(files[STAT], "/" + STAT)
        except StatsParseError:
            return None


class ImageNetnsView(NetnsView):
    """A netns inside a host image: files under ``prefix`` and sos-named captures."""

    def __init__(self, root: HostRoot, name: str, prefix: str = "", sos_name: str | None = None):
        self.root, self.name, self.prefix = root, name, prefix
        self.sos_name = sos_name  # the ip-netns name sos used in file names; None for init

    def read_many(self, rels: list[str]) -> dict[str, tuple[str, str]]:
        out = {}
        for r in rels:
            t = self.root.read_text(self.prefix + r)
            if t is not None:
                out[r] = (t, "/" + self.prefix + r if self.prefix else "/" + r)
        return out

    def listdir(self, rel: str) -> list[str]:
        return self.root.listdir(self.prefix + rel)

    def capture(self, plugin: str, cmd: str) -> Captured | None:
        if not self.prefix:
            return self.root.capture(plugin, cmd)
        # A non-initial netns: ctdoctor's own per-netns captures, then sosreport's names.
        rel = f"{self.prefix}sos_commands/{plugin}/{mangle_command(cmd)}"
        text = self.root.read_text(rel)
        if text is not None:
            return Captured(text, rel)
        if self.sos_name:
            return self.root.capture(plugin, cmd, netns=self.sos_name)
        return None

    def open_listing(self) -> Listing | None:
        for rel in (LISTING, LEGACY_LISTING):
            f = self.root.open_binary(self.prefix + rel)
            if f is not None:
                # `record` keeps a sample of a huge listing under a first line that says so
                sample = is_sample(f.peek(32)) if hasattr(f, "peek") else False
                return f, "/" + self.prefix + rel, sample
        for plugin, cmd in (("conntrack", "conntrack -L -o extended"), ("conntrack", "conntrack -L")):
            if self.prefix and not self.sos_name:
                break
            full = f"ip netns exec {self.sos_name} {cmd}" if self.sos_name else cmd
            rel = f"sos_commands/{plugin}/{mangle_command(full)}"
            f = self.root.open_binary(rel)
            if f is not None:
                tailed = os.path.islink(self.root.path / rel)
                return f, "/" + rel, tailed
        return None

    def listing_footer(self) -> tuple[tuple[int, int, int], int] | None:
        got = self.open_listing()
        if got is None:
            return None
        f, source, _ = got
        with f:
            if "conntrack" not in source.rsplit("/", 1)[-1]:
                return None
            try:
                f.seek(0, 2)
                f.seek(max(f.tell() - (64 << 10), 0))
                tail = f.read().decode("utf-8", "replace")
            except OSError:
                return None
        found = list(FOOTER.finditer(tail))
        if not found:
            return None
        m = found[-1]
        return (int(m.group(1)), int(m.group(2)), int(m.group(3))), int(m.group(4))

    def recorded_second_sample(self, notes: list[str]) -> tuple[CpuStats, float] | None:
        rel = f"ctdoctor/samples/{self.name}/nf_conntrack.stat"
        later = self.root.read_text(rel)
        meta = _read_meta(self.root) or {}
        if not later or not meta.get("stats_interval"):
            return None
        try:
            return parse_proc_stat(later, rel), float(meta["stats_interval"])
        except StatsParseError as e:
            notes.append(str(e))
            return None

    def saved_rule_files(self) -> list[tuple[str, str]]:
        if self.name != nsmod.INIT:
            return []
        out = []
        for rel in ("etc/sysconfig/iptables", "etc/sysconfig/ip6tables"):
            text = self.root.read_text(rel)
            if text:
                out.append((text, "/" + rel))
        return out

    def rule_listings(self) -> list[Captured]:
        out = []
        for plugin in ("firewall_tables", "networking"):
            for t in ("nat", "raw", "filter", "mangle"):
                for cmd in (f"iptables -t {t} -nvL", f"iptables -t {t} -vnxL"):
                    cap = self.capture(plugin, cmd)
                    if cap and cap.text.lstrip().startswith("Chain "):
                        out.append(cap)
                        break
        return out


def _read_meta(root: HostRoot) -> dict[str, Any] | None:
    """ctdoctor/meta.json of a bundle (read once per image: every netns view asks for it)."""
    if "meta" not in root.cache:
        root.cache["meta"] = _load_meta(root)
    meta: dict[str, Any] | None = root.cache["meta"]
    return meta


def _load_meta(root: HostRoot) -> dict[str, Any] | None:
    """meta.json, checked field by field: an image is untrusted input."""
    text = root.read_text(META, limit=1 << 20)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, and ints over Python's digit limit
        raise InputError(f"{root.label}: {META} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{root.label}: {META} is not a JSON object")
    bad = InputError(f"{root.label}: {META}: 'namespaces' must be a list of objects with a name")
    nss = meta.get("namespaces", [])
    if not isinstance(nss, list):
        raise bad
    names = set()
    for ns in nss:
        if not isinstance(ns, dict) or not isinstance(ns.get("name"), str) or not ns["name"]:
            raise bad
        name = ns["name"]
        if name in names or "/" in name or name in (".", "..") or len(name) > 255 or "\x00" in name:
            raise InputError(f"{root.label}: {META}: bad or repeated namespace name {clean(name, 60)!r}")
        names.add(name)
        inode = ns.get("inode")
        if inode is not None and (not isinstance(inode, int) or isinstance(inode, bool) or not 0 < inode < 1 << 64):
            raise InputError(f"{root.label}: {META}: namespace {name!r} has a bad inode")
        for k in ("owner", "sos_name"):
            if ns.get(k) is not None and not isinstance(ns[k], str):
                raise InputError(f"{root.label}: {META}: namespace {name!r}: {k} is not a string")
    iv = meta.get("stats_interval")
    if iv is not None and (isinstance(iv, bool) or not isinstance(iv, (int, float)) or not 0 < iv <= 86400):
        raise InputError(f"{root.label}: {META}: stats_interval must be a number of seconds (0-86400]")
    if meta.get("created") is not None and not isinstance(meta["created"], str):
        raise InputError(f"{root.label}: {META}: created is not a time string")
    return meta
