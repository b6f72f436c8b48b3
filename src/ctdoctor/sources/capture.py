"""What ``collect`` (and ``record``'s incidents) copy from the live host, read here.

Like a sos plugin, the collector *declares* what it copies (``COPY``) and which commands it
captures (``COMMANDS``); offline reading (HostRoot, Snapshot) uses the very same paths, so a
bundle read with ``--root`` gives what the live host gave. Every function returns the bytes or
text it read, keyed by the path the bundle stores it under; ``bundle.collect`` writes them.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable

from ctdoctor.errors import Failure
from ctdoctor.model.modules import CONNTRACK_MODULES
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.hostroot import mangle_command, run_command
from ctdoctor.sources.system import boot_time as parse_boot_time

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
STAT = "proc/net/stat/nf_conntrack"
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


def read(path: str, limit: int | None = None) -> bytes | None:
    """A file's bytes (its last ``limit`` bytes when given); None when it cannot be read."""
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


def _read_dir(folder: str, keep: Callable[[bytes], bool] | None = None) -> dict[str, bytes]:
    """The files of one folder (one level), keyed ``folder/name``."""
    out: dict[str, bytes] = {}
    try:
        names = sorted(os.listdir("/" + folder))
    except OSError:
        return out
    for n in names:
        v = read(f"/{folder}/{n}")
        if v is not None and (keep is None or keep(v)):
            out[f"{folder}/{n}"] = v
    return out


def _read_netns_files(files: list[str], dirs: list[str]) -> dict[str, bytes]:
    """Runs inside the target netns."""
    out = {}
    for rel in files:
        data = read("/" + rel)
        if data is not None:
            out[rel] = data
    for folder in dirs:
        out.update(_read_dir(folder))
    return out


def hostname() -> str:
    return (read("/proc/sys/kernel/hostname") or b"host").decode().strip()


def boot_time() -> float | None:
    """When the host booted (unix time, to the millisecond)."""
    b = parse_boot_time((read("/proc/uptime") or b"").decode())
    return round(b, 3) if b is not None else None


def _udev_rule_matters(data: bytes) -> bool:
    return b"nf_conntrack" in data or b"sysctl" in data


def host_files() -> dict[str, bytes]:
    """Files copied whole from the initial netns's view of the host (COPY, COPY_DIRS, logs, modules)."""
    out: dict[str, bytes] = {}
    for rel in COPY:
        data = read("/" + rel)
        if data is not None:
            out[rel] = data
    for d in COPY_DIRS:
        out.update(_read_dir(d, _udev_rule_matters if d.endswith("udev/rules.d") else None))
    for rel in LOG_FILES:
        v = read("/" + rel, LOG_TAIL_BYTES)
        if v is not None:
            out[rel] = v
    release = (read("/proc/sys/kernel/osrelease") or b"").decode().strip()
    v = read(f"/lib/modules/{release}/modules.builtin")
    if v is not None:
        out[f"lib/modules/{release}/modules.builtin"] = v
    for mod in CONNTRACK_MODULES:
        out.update(_module_files(f"sys/module/{mod}"))
    return out


def _module_files(base: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if not os.path.isdir("/" + base):
        return out
    for sub in ("refcnt", "initstate"):
        v = read(f"/{base}/{sub}")
        if v is not None:
            out[f"{base}/{sub}"] = v
    out.update(_read_dir(f"{base}/parameters"))
    try:
        for h in sorted(os.listdir(f"/{base}/holders")):
            out[f"{base}/holders/{h}"] = b""
    except OSError:
        pass
    return out


def host_commands(failed: dict[str, int]) -> dict[str, str]:
    """COMMANDS' outputs, under the names sosreport gives them; a command that fails goes into
    ``failed`` (its text is an error message: not saved as the output)."""
    out: dict[str, str] = {}
    for plugin, cmd in COMMANDS:
        cap = run_command(cmd, timeout=60)
        if cap is not None and cap.status != 0:
            failed[cmd] = cap.status
        elif cap is not None:
            out[f"sos_commands/{plugin}/{mangle_command(cmd)}"] = cap.text
    return out


def netns_commands(ref: nsmod.NetnsRef, prefix: str, shown: str, sos_name: str | None,
                   failed: dict[str, int]) -> dict[str, str]:
    """A non-initial netns's commands, under ctdoctor's own path and the names sosreport uses."""
    out: dict[str, str] = {}
    pre = nsmod.preexec_for(ref)
    for plugin, cmd in NETNS_COMMANDS:
        cap = run_command(cmd, timeout=60, preexec_fn=pre)
        if cap is None:
            continue
        if cap.status != 0:
            failed[f"{cmd} (netns {shown})"] = cap.status
            continue
        out[f"{prefix}sos_commands/{plugin}/{mangle_command(cmd)}"] = cap.text
        if sos_name:
            name = mangle_command(f"ip netns exec {sos_name} {cmd}")
            where = (f"sos_commands/networking/namespaces/{sos_name}/{name}" if plugin == "networking"
                     else f"sos_commands/{plugin}/{name}")
            out[where] = cap.text
    return out


def born(ref: nsmod.NetnsRef) -> float | None:
    """When a non-initial netns appeared (kernel log lines older than this are not its)."""
    if ref.is_init:
        return None
    try:
        return os.stat(ref.path).st_ctime
    except OSError:
        return None


def read_in(ref: nsmod.NetnsRef, files: list[str], dirs: list[str]) -> dict[str, bytes] | None:
    """Files read inside a netns; None when the netns is gone (deleted while we worked)."""
    try:
        got: dict[str, bytes] = nsmod.call_in(ref, _read_netns_files, files, dirs)
        return got
    except Failure:
        if nsmod.gone(ref):
            return None
        raise


def read_stats(ref: nsmod.NetnsRef) -> bytes | None:
    """The netns's /proc/net/stat/nf_conntrack now (None when it or the netns is gone)."""
    later = read_in(ref, [STAT], [])
    return later.get(STAT) if later else None


def spool_listing(ref: nsmod.NetnsRef, spool_dir: str | None,
                  transform: Callable[[bytes], bytes] | None = None) -> str | None:
    """Stream the netns's entry listing into a temp file (never all in memory) in ``spool_dir``, whole
    lines through ``transform`` when given; its path, or None when the listing cannot be opened. The
    caller removes the file."""
    fd, tmp = tempfile.mkstemp(prefix=".ctdoctor-listing-", suffix=".tmp", dir=spool_dir or None)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                src = io.BufferedReader(nsmod.stream_in(ref, "/" + LISTING), 1 << 20)
            except OSError:
                os.unlink(tmp)
                return None
            with src:
                rest = b""
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    if transform is not None:
                        chunk = rest + chunk
                        cut = chunk.rfind(b"\n") + 1
                        chunk, rest = chunk[:cut], chunk[cut:]
                        chunk = transform(chunk)
                    out.write(chunk)
                if rest:
                    out.write(transform(rest) if transform is not None else rest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp
