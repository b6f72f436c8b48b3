"""Conntrack lines in kernel log text: dmesg, ``journalctl -k``, /var/log/messages, kern.log.

Formats seen across kernel generations::

    nf_conntrack: table full, dropping packet.                 (2.6.x, trailing period)
    ip_conntrack: table full, dropping packet.                 (2.6 ip_conntrack)
    nf_conntrack: nf_conntrack: table full, dropping packet    (pr_fmt prefix, 4.x-6.x)
    nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet   (6.18+, non-init netns)
    nf_conntrack: expectation table full
    nf_conntrack: falling back to vmalloc.
    nf_conntrack version 0.5.0 (65536 buckets, 262144 max)
    net_ratelimit: 312 callbacks suppressed / __ratelimit: 12 callbacks suppressed
    printk: 12 messages suppressed. / NET: 3 messages suppressed   (2.6-era rate limiting)
    Linux version 3.10.0-1160.el7.x86_64 (...)                  (a boot: the kernel's first line)
    -- Reboot --  /  -- Boot 6b1e... --                          (journalctl between boots)

Each event carries when it happened as far as the line tells (``at``, seconds since the
epoch, the host's local time read as UTC, like the capture time it is compared with):
syslog lines have no year, so it comes from ``year_ref`` (the capture time, or a
rotated file's date), the year before when the date would lie after it.
"""

from __future__ import annotations

import calendar
import re
import time as _time

from ctdoctor.model.kernel import BOOT, EXPECT_FULL, SUPPRESSED, TABLE_FULL, VERSION, VMALLOC
from ctdoctor.model.kernlog import KernelLogEvent

_TS = re.compile(
    r"^(?:\[\s*(?P<mono>\d+\.\d+)\]\s*"                     # dmesg
    r"|\[(?P<ctime>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d [\d:]{8} \d{4})\]\s*"  # dmesg -T
    r"|(?P<iso>\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:?\d\d|Z)?)\s+\S+\s+kernel:\s*(?:\[\s*(?P<mono2>[\d.]+)\]\s*)?"
    r"|(?P<syslog>[A-Z][a-z]{2}\s+\d+\s+[\d:]+)\s+(?:\S+\s+)?kernel:\s*(?:\[\s*(?P<mono3>[\d.]+)\]\s*)?"
    # OpenWrt's logread: "Sat Sep  9 16:28:18 2017 kern.warn kernel: [65503.710000] ..."
    r"|(?P<logread>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d [\d:]{8} \d{4}) \S+ kernel:\s*(?:\[\s*(?P<mono4>[\d.]+)\]\s*)?"
    r")?"
)
TABLE_FULL_RE = re.compile(r"(?:nf|ip)_conntrack: (?:nf_conntrack: )?table full(?: in netns (?P<netns>\d+))?, "
                           r"dropping packet")
_RULES = [
    (TABLE_FULL, TABLE_FULL_RE),
    (EXPECT_FULL, re.compile(r"nf_conntrack: (?:nf_conntrack: )?expectation table full")),
    (VMALLOC, re.compile(r"(?:nf|ip)_conntrack: (?:nf_conntrack: )?falling back to vmalloc")),
    (VERSION, re.compile(r"(?:nf|ip)_conntrack version [\d.]+ \((?P<buckets>\d+) buckets, (?P<max>\d+) max\)")),
    (SUPPRESSED, re.compile(r"(?:net_ratelimit|__ratelimit): (?P<n>\d+) callbacks suppressed"
                            r"|(?:printk|NET): (?P<n2>\d+) messages suppressed")),
    (BOOT, re.compile(r"\bLinux version \d+\.\d+|^-- (?:Reboot|Boot [0-9a-f]+) --$")),
]
_PREFILTER = ("conntrack", "suppressed", "Linux version", "-- Reboot --", "-- Boot ")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}


def parse_kernel_log(text: str, source: str, year_ref: float | None = None) -> list[KernelLogEvent]:
    out: list[KernelLogEvent] = []
    last_full: KernelLogEvent | None = None
    for n, ln in enumerate(text.splitlines(), 1):
        if not any(w in ln for w in _PREFILTER):
            continue
        for kind, rx in _RULES:
            m = rx.search(ln) if kind != BOOT else rx.search(ln.strip())
            if not m:
                continue
            ts = _TS.match(ln)
            when = mono = None
            if ts:
                when = ts.group("mono") or ts.group("ctime") or ts.group("iso") or ts.group("syslog") or \
                    ts.group("logread")
                mono = ts.group("mono") or ts.group("mono2") or ts.group("mono3") or ts.group("mono4")
            ev = KernelLogEvent(kind, ln.strip(), n, source, when=when, mono=mono, text=ln[m.start():].strip())
            if ts:
                ev.at = _wall_time(ts, year_ref)
            g = m.groupdict()
            if g.get("netns"):
                ev.netns_inode = int(g["netns"])
            if g.get("buckets"):
                ev.buckets, ev.max = int(g["buckets"]), int(g["max"])
            if g.get("n") or g.get("n2"):
                ev.suppressed = int(g.get("n") or g.get("n2") or 0)
                # the kernel's rate limiter hid this many more messages; right after a table-full
                # line they are (at least partly) more of the same drops
                if last_full is not None and n - last_full.lineno <= 3:
                    last_full.suppressed_after += ev.suppressed
            last_full = ev if kind == TABLE_FULL else last_full if kind == SUPPRESSED else None
            out.append(ev)
            break
    return out


def _wall_time(ts: re.Match[str], year_ref: float | None) -> float | None:
    """The line's time as seconds since the epoch, or None when it carries none (or only uptime)."""
    try:
        if ts.group("iso"):
            iso = ts.group("iso").replace("Z", "+00:00")
            m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", iso)
            if not m:
                return None
            y, mo, d, h, mi, sec = (int(x) for x in m.groups())
            return float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))
        if ts.group("ctime") or ts.group("logread"):
            t = _time.strptime(" ".join((ts.group("ctime") or ts.group("logread")).split()), "%a %b %d %H:%M:%S %Y")
            return float(calendar.timegm(t))
        if ts.group("syslog"):
            mon, day, hms = ts.group("syslog").split()
            h, mi, sec = (int(x) for x in hms.split(":"))
            ref = year_ref if year_ref is not None else _time.time()
            year = _time.gmtime(ref).tm_year
            at = calendar.timegm((year, _MONTHS[mon], int(day), h, mi, sec, 0, 0, 0))
            if at > ref + 2 * 86400:  # no year in the line: it cannot lie after the reference
                at = calendar.timegm((year - 1, _MONTHS[mon], int(day), h, mi, sec, 0, 0, 0))
            return float(at)
    except (ValueError, KeyError, OverflowError):
        return None
    return None


def assign_boots(events: list[KernelLogEvent], boot_start: float | None) -> None:
    """Mark each event as of the capture's boot (0) or an earlier one (-1).

    A line with a wall time is compared with the boot's start when that is known; otherwise a
    source's own boot lines (``Linux version``, journalctl's ``-- Reboot --``) split it. A
    ``dmesg`` capture holds only the current boot; its uptime stamps become wall times when the
    boot's start is known.
    """
    by_source: dict[str, list[KernelLogEvent]] = {}
    for e in events:
        by_source.setdefault(e.source, []).append(e)
    for source, evs in by_source.items():
        is_dmesg = source.rsplit("/", 1)[-1].startswith("dmesg") and not source.startswith("/var/log")
        last_boot_line = max((e.lineno for e in evs if e.kind == BOOT), default=None)
        for e in evs:
            if is_dmesg or source == "dmesg":
                e.boot = 0
                if e.at is None and e.mono and boot_start is not None:
                    e.at = boot_start + float(e.mono)
            elif e.at is not None and boot_start is not None:
                e.boot = 0 if e.at >= boot_start - 120 else -1
            elif last_boot_line is not None:
                e.boot = 0 if e.lineno >= last_boot_line else -1


def dedupe(events: list[KernelLogEvent]) -> tuple[list[KernelLogEvent], int]:
    """One event per real kernel message across sources that hold the same lines (a
    sosreport's ``dmesg`` beside ``/var/log/messages`` and the journal): (events, dropped).

    Lines whose wall time is known are one event per (second, text) whatever the source
    (rotated files hold different days: all of them count). Lines that carry their
    seconds-since-boot are one event per (stamp, text). Otherwise the sources cannot be lined
    up, so for each message the most complete source counts and the others are its copies.
    Sources are compared by family (``source_family``): ``messages`` and
    ``messages-20240310`` are one log cut in pieces. Events come back in time order.
    """
    groups: dict[tuple[str, int | None, str], dict[str, list[KernelLogEvent]]] = {}
    for e in events:
        groups.setdefault((e.kind, e.netns_inode, e.text), {}).setdefault(source_family(e.source), []).append(e)
    out: list[KernelLogEvent] = []
    for by_source in groups.values():
        flat = [e for evs in by_source.values() for e in evs]
        if all(e.at is not None for e in flat):
            # per second, as many events as the source that saw most in it (a burst logs several
            # identical lines in one second; two sources hold copies of the same ones)
            per_second: dict[int, list[KernelLogEvent]] = {}
            for src_evs in by_source.values():
                seen: dict[int, list[KernelLogEvent]] = {}
                for e in src_evs:
                    seen.setdefault(int(e.at or 0), []).append(e)
                for sec, same in seen.items():
                    if len(same) > len(per_second.get(sec, [])):
                        per_second[sec] = same
            for same in per_second.values():
                out.extend(same)
            continue
        stamped: dict[str, KernelLogEvent] = {}
        unstamped: list[list[KernelLogEvent]] = []
        evs: list[KernelLogEvent]
        for evs in by_source.values():
            if all(e.mono for e in evs):
                for e in evs:
                    stamped.setdefault(e.mono or "", e)
            else:
                unstamped.append(evs)
        candidates: list[list[KernelLogEvent]] = [list(stamped.values()), *unstamped]
        best = candidates[0]
        for cand in candidates[1:]:  # the source that saw the most (first of equals)
            if len(cand) > len(best):
                best = cand
        out.extend(best)
    order = {id(e): i for i, e in enumerate(events)}
    out.sort(key=lambda e: (e.at if e.at is not None else float("inf"), order[id(e)]))
    return out, len(events) - len(out)


_ROTATED = re.compile(r"^(?P<base>messages|kern\.log|syslog|dmesg)(?:[.-](?P<suffix>\d+))?(?P<z>\.gz|\.xz|\.bz2)?$")


def source_family(source: str) -> str:
    """``/var/log/messages-20240310`` and ``/var/log/messages.1.gz`` are pieces of ``/var/log/messages``."""
    head, _, name = source.rpartition("/")
    m = _ROTATED.match(name)
    return f"{head}/{m.group('base')}" if m and head else source


def rotated_logs(names: list[str]) -> list[tuple[str, str, int | None]]:
    """(file name, family, rotation date as YYYYMMDD or None) of the log files in /var/log, oldest
    first within a family: ``messages-20240301`` < ``messages-20240308`` < ``messages``;
    ``kern.log.3.gz`` < ``kern.log.2.gz`` < ``kern.log.1`` < ``kern.log``."""
    out = []
    for name in names:
        m = _ROTATED.match(name)
        if not m:
            continue
        suffix = m.group("suffix")
        dated = int(suffix) if suffix and len(suffix) == 8 else None
        if suffix is None:
            age = 0
        elif dated is not None:
            age = 100000000 - dated  # newer date, smaller age
        else:
            age = int(suffix)
        out.append((age, name, m.group("base"), dated))
    out.sort(key=lambda t: (t[2], -t[0]))
    return [(name, base, dated) for _, name, base, dated in out]
