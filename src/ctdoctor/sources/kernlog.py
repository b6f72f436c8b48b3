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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ctdoctor.kernel import EXPECT_FULL, SUPPRESSED, TABLE_FULL, VERSION, VMALLOC

_TS = re.compile(
    r"^(?:\[\s*(?P<mono>\d+\.\d+)\]\s*"                     # dmesg
    r"|\[(?P<ctime>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d [\d:]{8} \d{4})\]\s*"  # dmesg -T
    r"|(?P<iso>\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:?\d\d|Z)?)\s+\S+\s+kernel:\s*(?:\[\s*(?P<mono2>[\d.]+)\]\s*)?"
    r"|(?P<syslog>[A-Z][a-z]{2}\s+\d+\s+[\d:]+)\s+\S+\s+kernel:\s*(?:\[\s*(?P<mono3>[\d.]+)\]\s*)?"
    r")?"
)
TABLE_FULL_RE = re.compile(r"(?:nf|ip)_conntrack: (?:nf_conntrack: )?table full(?: in netns (?P<netns>\d+))?, "
                           r"dropping packet")
_RULES = [
    (TABLE_FULL, TABLE_FULL_RE),
    (EXPECT_FULL, re.compile(r"nf_conntrack: (?:nf_conntrack: )?expectation table full")),
    (VMALLOC, re.compile(r"(?:nf|ip)_conntrack: (?:nf_conntrack: )?falling back to vmalloc")),
    (VERSION, re.compile(r"(?:nf|ip)_conntrack version [\d.]+ \((?P<buckets>\d+) buckets, (?P<max>\d+) max\)")),
    (SUPPRESSED, re.compile(r"(?:net_ratelimit|__ratelimit): (?P<n>\d+) callbacks suppressed")),
]


@dataclass
class KernelLogEvent:
    kind: str
    line: str
    lineno: int
    source: str
    netns_inode: int | None = None
    when: str | None = None  # the timestamp as printed
    mono: str | None = None  # seconds since boot, when the line carries them (dedup key)
    text: str = ""  # the message without its timestamps (dedup key)
    buckets: int | None = None
    max: int | None = None
    suppressed: int | None = None


def parse_kernel_log(text: str, source: str) -> list[KernelLogEvent]:
    out = []
    for n, ln in enumerate(text.splitlines(), 1):
        if "conntrack" not in ln and "callbacks suppressed" not in ln:
            continue
        for kind, rx in _RULES:
            m = rx.search(ln)
            if not m:
                continue
            ts = _TS.match(ln)
            when = mono = None
            if ts:
                when = ts.group("mono") or ts.group("ctime") or ts.group("iso") or ts.group("syslog")
                mono = ts.group("mono") or ts.group("mono2") or ts.group("mono3")
            ev = KernelLogEvent(kind, ln.strip(), n, source, when=when, mono=mono, text=ln[m.start():].strip())
            g = m.groupdict()
            if g.get("netns"):
                ev.netns_inode = int(g["netns"])
            if g.get("buckets"):
                ev.buckets, ev.max = int(g["buckets"]), int(g["max"])
            if g.get("n"):
                ev.suppressed = int(g["n"])
            out.append(ev)
            break
    return out


def dedupe(events: list[KernelLogEvent]) -> tuple[list[KernelLogEvent], int]:
    """One event per real kernel message across sources that hold the same lines (a
    sosreport's ``dmesg`` beside ``/var/log/messages`` and the journal): (events, dropped).

    Lines that carry their seconds-since-boot are one event per (stamp, text). Without it
    (syslog and the journal usually strip it) the sources cannot be lined up, so for each
    message the most complete source counts and the others are taken as its copies.
    """
    groups: dict[tuple, dict[str, list[KernelLogEvent]]] = {}
    for e in events:
        groups.setdefault((e.kind, e.netns_inode, e.text), {}).setdefault(e.source, []).append(e)
    out: list[KernelLogEvent] = []
    for by_source in groups.values():
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
    out.sort(key=lambda e: order[id(e)])
    return out, len(events) - len(out)
