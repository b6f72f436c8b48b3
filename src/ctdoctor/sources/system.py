"""Small host facts: kernel release, memory, the nf_conntrack slab, CPUs, hostname."""

from __future__ import annotations

import re
from dataclasses import dataclass


def parse_kernel_release(text: str | None) -> tuple[int, int, int] | None:
    """``6.18.44-fc-v669`` -> (6, 18, 44); also reads ``uname -a`` output."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("Linux "):
        parts = text.split()
        text = parts[2] if len(parts) > 2 else ""
    m = re.match(r"(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def boot_time(uptime: str | None, now: float | None = None) -> float | None:
    """When the host booted (unix time), from /proc/uptime's first field; None if unreadable."""
    import time

    try:
        return (time.time() if now is None else now) - float((uptime or "").split()[0])
    except (IndexError, ValueError):
        return None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}."""
    out = {}
    for ln in text.splitlines():
        m = re.match(r"(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?", ln)
        if m:
            mult = 1024 if ln.rstrip().endswith("kB") else 1
            out[m.group(1)] = int(m.group(2)) * mult
    return out


@dataclass
class SlabInfo:
    name: str
    active_objs: int
    num_objs: int
    objsize: int


def parse_slabinfo(text: str) -> dict[str, SlabInfo]:
    """/proc/slabinfo 2.x: ``name active_objs num_objs objsize objperslab pagesperslab : ...``."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith(("slabinfo", "#")):
            continue
        p = ln.split()
        if len(p) >= 4 and p[1].isdigit() and p[2].isdigit() and p[3].isdigit():
            out[p[0]] = SlabInfo(p[0], int(p[1]), int(p[2]), int(p[3]))
    return out


def conntrack_slab(slabs: dict[str, SlabInfo]) -> SlabInfo | None:
    """The conntrack cache: ``nf_conntrack`` (older kernels: ``nf_conntrack_<hex>`` per netns)."""
    if "nf_conntrack" in slabs:
        return slabs["nf_conntrack"]
    for name, s in slabs.items():
        if name.startswith("nf_conntrack_") and re.fullmatch(r"nf_conntrack_[0-9a-f]+", name):
            return s
    return slabs.get("ip_conntrack")


def count_cpus(cpuinfo: str | None, possible: str | None = None) -> int | None:
    """CPUs from /sys/devices/system/cpu/possible (``0-1``) or /proc/cpuinfo."""
    if possible:
        n = 0
        for part in possible.strip().split(","):
            a, _, b = part.partition("-")
            if a.isdigit():
                n += (int(b) - int(a) + 1) if b.isdigit() else 1
        if n:
            return n
    if cpuinfo:
        n = len(re.findall(r"^processor\s*:", cpuinfo, re.MULTILINE))
        return n or None
    return None
