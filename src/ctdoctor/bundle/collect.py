"""Capture a host image: the files and command outputs ctdoctor reads, in DESIGN §4 layout.

Like a sos plugin, the collector *declares* what it copies (``COPY``) and which
commands it captures (``COMMANDS``); offline reading (HostRoot, Snapshot) uses
the very same paths, so a bundle read with ``--root`` gives what the live host
gave. Non-initial namespaces go under ``ctdoctor/netns/<name>/`` (their own
``proc/...`` files and ``sos_commands/``), and ip-netns-named ones are also
written under the names sosreport uses (``ip_netns_exec_<ns>_<cmd>``).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ctdoctor import __version__
from ctdoctor.errors import Failure, InputError
from ctdoctor.listing.formats import SAMPLE_MARK
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.hostroot import mangle_command, run_command
from ctdoctor.sources.modules import CONNTRACK_MODULES

# Files copied whole from the host (globs are expanded with os.listdir, one level).
COPY = [
    "proc/sys/kernel/osrelease", "proc/sys/kernel/hostname", "proc/meminfo", "proc/cpuinfo",
    "proc/slabinfo", "proc/modules", "sys/devices/system/cpu/possible",
    "etc/os-release", "etc/hostname", "etc/sysctl.conf", "etc/modules",
    "etc/sysconfig/iptables-config", "etc/sysconfig/ip6tables-config",
    "etc/sysconfig/iptables", "etc/sysconfig/ip6tables",
]
COPY_DIRS = [
    "etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d",
    "etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d",
    "etc/modules-load.d", "run/modules-load.d", "usr/local/lib/modules-load.d", "usr/lib/modules-load.d",
    "lib/modules-load.d", "etc/udev/rules.d",
]
LOG_FILES = ["var/log/messages", "var/log/kern.log"]
LOG_TAIL_BYTES = 16 << 20
# Per netns: copied from inside the netns.
NETNS_FILES = ["proc/net/stat/nf_conntrack", "proc/net/nf_conntrack_expect"]
NETNS_DIRS = ["proc/sys/net/netfilter"]
LISTING = "proc/net/nf_conntrack"
# (sos plugin, command) captured in the initial netns.
COMMANDS = [
    ("kernel", "sysctl -a"), ("kernel", "lsmod"), ("kernel", "dmesg"), ("kernel", "uname -a"),
    ("conntrack", "conntrack -S"),
    ("nftables", "nft -j list ruleset"), ("firewall_tables", "nft -a list ruleset"),
    ("firewall_tables", "iptables-save"), ("firewall_tables", "ip6tables-save"),
    ("networking", "ss -tanH state established"),
]
NETNS_COMMANDS = [
    ("networking", "sysctl -a"), ("conntrack", "conntrack -S"), ("nftables", "nft -j list ruleset"),
    ("firewall_tables", "iptables-save"), ("firewall_tables", "ip6tables-save"),
]
STATS_INTERVAL = 1.0


@dataclass
class Bundle:
    """Members to write: name -> bytes (small) or a path of a spooled temp file (listings)."""

    top: str
    members: dict[str, bytes] = field(default_factory=dict)
    spooled: dict[str, str] = field(default_factory=dict)
    spool_dir: str = ""  # where spooled listings go: the output's folder

    def add(self, rel: str, data: bytes | str) -> None:
        self.members[rel] = data.encode() if isinstance(data, str) else data


def _read(path: str, limit: int | None = None) -> bytes | None:
    try:
        with open(path, "rb") as f:
            if limit is None:
                chunks = []
                while True:
                    c = f.read(1 << 20)
                    if not c:
                        break
                    chunks.append(c)
                return b"".join(chunks)
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                f.seek(size - limit)
            return f.read(limit)
    except OSError:
        return None


def _read_netns_files(files: list[str], dirs: list[str]) -> dict[str, bytes]:
    """Runs inside the target netns."""
    out = {}
    for rel in files:
        data = _read("/" + rel)
        if data is not None:
            out[rel] = data
    for folder in dirs:
        try:
            names = sorted(os.listdir("/" + folder))
        except OSError:
            continue
        for n in names:
            v = _read(f"/{folder}/{n}")
            if v is not None:
                out[f"{folder}/{n}"] = v
    return out


class Anonymizer:
    """Maps addresses consistently: the same input address gives the same output address.

    Loopback, unspecified and broadcast addresses are kept (they say nothing
    about the customer); IPv4 goes to 10.0.0.0/8 and IPv6 to fd00::/8 in
    order of first appearance; the printed form (full or compressed IPv6) is kept.
    """

    def __init__(self):
        import re

        self.v4: dict[str, str] = {}
        self.v6: dict[str, str] = {}
        self.words: dict[str, str] = {}
        self._re_names = None
        self._re4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
        self._re6 = re.compile(r"(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")

    def _map4(self, m):
        import ipaddress

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

    def _map6(self, m):
        import ipaddress

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
        import re

        self.words = dict(words)
        alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._re_names = re.compile(r"(?<![\w.-])(?:" + alt + r")(?![\w-])") if alt else None

    def _names(self, s: str) -> str:
        if self._re_names is None:
            return s
        return self._re_names.sub(lambda m: self.words[m.group(0)], s)

    def text(self, s: str) -> str:
        return self._names(self._re4.sub(self._map4, self._re6.sub(self._map6, s)))

    def data(self, b: bytes) -> bytes:
        return self.text(b.decode("utf-8", "replace")).encode()

    def names(self, b: bytes) -> bytes:
        return self._names(b.decode("utf-8", "replace")).encode()


def _boot_time() -> float | None:
    from ctdoctor.sources.system import boot_time

    b = boot_time((_read("/proc/uptime") or b"").decode())
    return round(b, 3) if b is not None else None


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


def _netns_aliases(refs, anonymize_netns: bool) -> dict[str, str]:
    """ip-netns / pid names -> netns-N stand-ins (--anonymize-netns); init keeps its name."""
    if not anonymize_netns:
        return {}
    others = [r for r in refs if not r.is_init]
    return {r.name: f"netns-{i}" for i, r in enumerate(others, 1)}


def _host_files(b: Bundle) -> None:
    """Files copied whole from the initial netns's view of the host (COPY, COPY_DIRS, logs, modules)."""
    for rel in COPY:
        data = _read("/" + rel)
        if data is not None:
            b.add(rel, data)
    for d in COPY_DIRS:
        try:
            names = sorted(os.listdir("/" + d))
        except OSError:
            continue
        for name in names:
            v = _read(f"/{d}/{name}")
            if d.endswith("udev/rules.d") and v is not None and b"nf_conntrack" not in v and b"sysctl" not in v:
                continue
            if v is not None:
                b.add(f"{d}/{name}", v)
    for rel in LOG_FILES:
        v = _read("/" + rel, LOG_TAIL_BYTES)
        if v is not None:
            b.add(rel, v)
    release = (_read("/proc/sys/kernel/osrelease") or b"").decode().strip()
    v = _read(f"/lib/modules/{release}/modules.builtin")
    if v is not None:
        b.add(f"lib/modules/{release}/modules.builtin", v)
    for mod in CONNTRACK_MODULES:
        _module_files(b, f"sys/module/{mod}")


def _module_files(b: Bundle, base: str) -> None:
    if not os.path.isdir("/" + base):
        return
    for sub in ("refcnt", "initstate"):
        v = _read(f"/{base}/{sub}")
        if v is not None:
            b.add(f"{base}/{sub}", v)
    try:
        for p in sorted(os.listdir(f"/{base}/parameters")):
            v = _read(f"/{base}/parameters/{p}")
            if v is not None:
                b.add(f"{base}/parameters/{p}", v)
    except OSError:
        pass
    try:
        for h in sorted(os.listdir(f"/{base}/holders")):
            b.add(f"{base}/holders/{h}", b"")
    except OSError:
        pass


def _host_commands(b: Bundle, failed: dict[str, int]) -> None:
    for plugin, cmd in COMMANDS:
        cap = run_command(cmd, timeout=60)
        if cap is not None and cap.status != 0:
            failed[cmd] = cap.status  # its text is an error message: not saved as the output
        elif cap is not None:
            b.add(f"sos_commands/{plugin}/{mangle_command(cmd)}", cap.text)


def _netns_commands(b: Bundle, ref, prefix: str, shown: str, sos_name: str | None, failed: dict[str, int]) -> None:
    """A non-initial netns's commands, under ctdoctor's own path and the names sosreport uses."""
    pre = nsmod.preexec_for(ref)
    for plugin, cmd in NETNS_COMMANDS:
        cap = run_command(cmd, timeout=60, preexec_fn=pre)
        if cap is None:
            continue
        if cap.status != 0:
            failed[f"{cmd} (netns {shown})"] = cap.status
            continue
        b.add(f"{prefix}sos_commands/{plugin}/{mangle_command(cmd)}", cap.text)
        if sos_name:
            name = mangle_command(f"ip netns exec {sos_name} {cmd}")
            where = (f"sos_commands/networking/namespaces/{sos_name}/{name}" if plugin == "networking"
                     else f"sos_commands/{plugin}/{name}")
            b.add(where, cap.text)


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
            progress=None, only: set[str] | None = None, entries_for: set[str] | None = None,
            extra: dict[str, bytes | Callable[[], bytes]] | None = None, on_listing=None,
            listing_limit: int | None = None, host_root: str | None = None) -> dict:
    """Write the bundle to ``output`` (a .tar.gz) atomically. Returns meta.

    ``only``: the namespaces to include (init's host files are always there); ``entries_for``:
    whose listings to include (default: all included); ``extra``: more members, bytes or a
    callable giving them (``record``'s incident.json); ``on_listing(ref, path)``: called with each
    spooled listing before it is cut to ``listing_limit`` bytes (at a line boundary)."""
    _check_output(output)
    anon = Anonymizer() if anonymize else None
    hostname = (_read("/proc/sys/kernel/hostname") or b"host").decode().strip()
    b = Bundle(top=f"ctdoctor-{'anonymized' if anon else hostname}-{time.strftime('%Y%m%d-%H%M%S')}",
               spool_dir=os.path.dirname(os.path.abspath(output)))
    found = nsmod.discover()
    refs = [r for r in found if only is None or r.is_init or r.name in only]
    refs, _gone = nsmod.pin(refs)  # a pod deleted mid-capture stays readable to the end (noted as vanished)
    from ctdoctor.sources import pods as podmod
    from ctdoctor.sources.hostroot import HostRoot

    live = HostRoot.live()
    live.host_root = host_root
    pods = {} if anonymize_netns else podmod.for_refs(refs, live.host_files(), live)
    alias = _netns_aliases(refs, anonymize_netns)
    if anon:
        # every copy of the host's names (uname -a, sysctl -a's kernel.hostname, syslog lines) and,
        # with --anonymize-netns, of the namespace names
        anon.set_names({**dict.fromkeys(_host_names(hostname), "anonymized"), **alias})
    tick = progress or (lambda msg: None)
    tick(("start", 3 + len(refs) * (3 if entries else 2)))

    # 1. first stats sample of every netns, so the second lands one interval later
    t0 = time.monotonic()
    first: dict[str, dict[str, bytes]] = {}
    vanished: list[str] = []
    for ref in list(refs):
        got = _read_in(ref, NETNS_FILES, NETNS_DIRS)
        if got is None:  # deleted between discovery and now (a pod went away): left out, and said so
            refs.remove(ref)
            vanished.append(alias.get(ref.name, ref.name))
        else:
            first[ref.name] = got
    tick("stats sample 1")
    # 2. host files and commands (init netns)
    _host_files(b)
    tick("host files")
    failed: dict[str, int] = {}
    _host_commands(b, failed)
    tick("commands")
    # 3. per netns: files, commands, entries
    metas = []
    for ref in refs:
        shown = alias.get(ref.name, ref.name)
        if nsmod.gone(ref):
            vanished.append(shown)  # went away while we read the others: its first sample stays
        prefix = "" if ref.is_init else f"ctdoctor/netns/{shown}/"
        sos_name = shown if ref.owner == "ip netns" else None
        for rel, data in first[ref.name].items():
            b.add(prefix + rel, data)
        if not ref.is_init:
            _netns_commands(b, ref, prefix, shown, sos_name, failed)
        tick(f"netns {ref.name}")
        if entries and (entries_for is None or ref.name in entries_for):
            _listing(b, ref, prefix + LISTING, anon, on_listing, listing_limit)
            tick(f"entries {ref.name}")
        pod = pods.get(ref.inode)
        metas.append({"name": shown, "inode": ref.inode, "owner": "hidden" if alias else ref.owner,
                      "sos_name": sos_name, "born": _born(ref),
                      "pod": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid,
                              "container": pod.container} if pod else None})
    # 4. second stats sample
    interval = _second_sample(b, refs, alias, t0)
    tick("stats sample 2")
    meta = {
        "format": "ctdoctor-bundle", "format_version": 1, "ctdoctor": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anonymized": anonymize, "entries": entries,
        "stats_interval": round(interval, 3), "namespaces": metas,
        "failed_commands": failed, "boot_time": _boot_time(), "vanished": sorted(set(vanished)),
    }
    b.add("ctdoctor/meta.json", json.dumps(meta, indent=2))
    for rel, member in (extra or {}).items():
        b.add(rel, member() if callable(member) else member)  # a callable: known only once the listing was read
    if anon:
        _anonymize(b, anon)
    _write_tar(b, output)
    return meta


def _listing(b: Bundle, ref, rel: str, anon, on_listing, listing_limit: int | None) -> None:
    _spool_listing(b, ref, rel, anon)
    tmp = b.spooled.get(rel)
    if tmp and on_listing is not None:
        on_listing(ref, tmp)
    if tmp and listing_limit is not None:
        _cut(tmp, listing_limit)


def _born(ref) -> float | None:
    """When a non-initial netns appeared (kernel log lines older than this are not its)."""
    if ref.is_init:
        return None
    try:
        return os.stat(ref.path).st_ctime
    except OSError:
        return None


def _read_in(ref, files: list[str], dirs: list[str]) -> dict[str, bytes] | None:
    """Files read inside a netns; None when the netns is gone (deleted while we worked)."""
    try:
        return nsmod.call_in(ref, _read_netns_files, files, dirs)
    except Failure:
        if nsmod.gone(ref):
            return None
        raise


def _second_sample(b: Bundle, refs, alias: dict[str, str], t0: float) -> float:
    wait = STATS_INTERVAL - (time.monotonic() - t0)
    if wait > 0:
        time.sleep(wait)
    interval = time.monotonic() - t0
    for ref in refs:
        later = _read_in(ref, ["proc/net/stat/nf_conntrack"], [])
        if later and "proc/net/stat/nf_conntrack" in later:
            b.add(f"ctdoctor/samples/{alias.get(ref.name, ref.name)}/nf_conntrack.stat",
                  later["proc/net/stat/nf_conntrack"])
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


def _spool_listing(b: Bundle, ref, rel: str, anon) -> None:
    """Stream the netns's entry listing into a temp file (never all in memory), beside the bundle: on
    the disk the bundle goes to (never a full /tmp), and removed with it by whoever stops the capture."""
    fd, tmp = tempfile.mkstemp(prefix=".ctdoctor-listing-", suffix=".tmp", dir=b.spool_dir or None)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                src = io.BufferedReader(nsmod.stream_in(ref, "/" + LISTING), 1 << 20)
            except OSError:
                os.unlink(tmp)
                return
            with src:
                rest = b""
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    if anon:
                        chunk = rest + chunk
                        cut = chunk.rfind(b"\n") + 1
                        chunk, rest = chunk[:cut], chunk[cut:]
                        chunk = anon.data(chunk)
                    out.write(chunk)
                if rest:
                    out.write(anon.data(rest) if anon else rest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    b.spooled[rel] = tmp


def _write_tar(b: Bundle, output: str) -> None:
    """Write to a temp file next to the output and rename: never a half-written bundle."""
    out_dir = os.path.dirname(os.path.abspath(output))
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
                else:
                    tf.add(b.spooled[rel], arcname=f"{b.top}/{rel}", recursive=False)
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
