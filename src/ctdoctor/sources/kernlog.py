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

TABLE_FULL, EXPECT_FULL, VMALLOC, VERSION, SUPPRESSED = (
    "table_full", "expect_full", "vmalloc_fallback", "version", "suppressed")

_TS = re.compile(
    r"^(?:\[\s*(?P<mono>\d+\.\d+)\]\s*"                     # dmesg
    r"|(?P<iso>\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:?\d\d|Z)?)\s+\S+\s+kernel:\s*(?:\[\s*[\d.]+\]\s*)?"  # rsyslog ISO
    r"|(?P<syslog>[A-Z][a-z]{2}\s+\d+\s+[\d:]+)\s+\S+\s+kernel:\s*(?:\[\s*[\d.]+\]\s*)?"  # classic syslog / journalctl
    r")?"
)
_RULES = [
    (TABLE_FULL, re.compile(r"(?:nf|ip)_conntrack: (?:nf_conntrack: )?table full(?: in netns (?P<netns>\d+))?, dropping packet")),
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
            when = None
            if ts:
                when = ts.group("mono") or ts.group("iso") or ts.group("syslog")
            ev = KernelLogEvent(kind, ln.strip(), n, source, when=when)
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
