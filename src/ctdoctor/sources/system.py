"""Small host facts: kernel release, memory, the nf_conntrack slab, CPUs, hostname."""

from __future__ import annotations

import calendar
import re
import time
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
    try:
        return (time.time() if now is None else now) - float((uptime or "").split()[0])
    except (IndexError, ValueError):
        return None


_MON = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                     "Dec"), 1)}


def parse_date_output(text: str | None) -> float | None:
    """``date`` as sos captures it (``Tue Mar 12 10:00:01 UTC 2024``, any zone name or none)
    -> seconds since the epoch of that wall time read as UTC (the zone is not applied: syslog
    lines, which it is compared with, are in the same local time)."""
    m = re.search(r"\b[A-Z][a-z]{2},? +([A-Z][a-z]{2}) +(\d{1,2}),? +(\d{1,2}):(\d\d):(\d\d)(?: +[AP]M)?"
                  r"(?: +[A-Za-z+\-0-9]{1,6})? +(\d{4})\b", text or "")
    if not m or m.group(1) not in _MON:
        return None
    mon, day, h, mi, sec, year = m.groups()
    try:
        return float(calendar.timegm((int(year), _MON[mon], int(day), int(h), int(mi), int(sec), 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def parse_uptime_output(text: str | None) -> float | None:
    """Seconds the host had been up, from ``uptime`` (``... up 3 days,  2:11, ...``, ``up 45 min``,
    ``up 1 day, 23 min``) or ``/proc/uptime`` (``12345.67 ...``)."""
    t = (text or "").strip()
    m = re.match(r"(\d+(?:\.\d+)?)\s+\d+(?:\.\d+)?\s*$", t)
    if m:
        return float(m.group(1))
    m = re.search(r"\bup\s+(?:(\d+)\s+days?,\s*)?(?:(\d+):(\d\d)|(\d+)\s+min|(\d+)\s+hrs?|(\d+)\s+secs?)?", t)
    if not m or not any(m.groups()):
        return None
    days, h, mi, mins, hrs, secs = (int(g) if g else 0 for g in m.groups())
    return float(days * 86400 + h * 3600 + mi * 60 + mins * 60 + hrs * 3600 + secs)


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
