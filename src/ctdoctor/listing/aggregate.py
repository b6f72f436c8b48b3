"""Counting entries by key: ``PyAggregator`` (pure Python), the twin of ``_fastscan.Aggregator``,
and ``Filter``, the one entry filter (state, protocol, port, source and destination networks).

Both aggregators take the same arguments and give the same results; ``make_aggregator``
chooses (the C one when built and not disabled with ``CTDOCTOR_NO_ACCEL=1``).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable
from typing import Any, Protocol

from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.fields import (
    FIELD_SLOT,
    S_ACCT,
    S_ASSURED,
    S_DPORT,
    S_DST,
    S_LABEL,
    S_OB,
    S_OPK,
    S_PROTO,
    S_RB,
    S_RPK,
    S_SPORT,
    S_SRC,
    S_UNREPLIED,
    SEP,
    U64,
    ScanFields,
)
from ctdoctor.listing.pyscan import ChunkScanner

Net = tuple[int, bytes, int]  # (IP version, packed network address, prefix length), as the C aggregator takes
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# the aggregator's arguments: key fields, states, protocols, port (-1: any), source and destination nets
AggArgs = tuple[tuple[int, ...], tuple[bytes, ...] | None, tuple[bytes, ...] | None, int, tuple[Net, ...] | None,
                tuple[Net, ...] | None]
Rows = dict[tuple[bytes, bytes], list[int]]  # (key, label) -> [entries, orig packets, orig bytes, reply packets, reply bytes]
TopRow = tuple[bytes, int, int, int, int, int, dict[bytes, int]]  # key, count, opk, ob, rpk, rb, {label: count}


class Aggregator(Protocol):
    """What ``_fastscan.Aggregator`` and ``PyAggregator`` both are."""

    @property
    def total(self) -> int: ...
    @property
    def matched(self) -> int: ...
    @property
    def accounting(self) -> bool: ...  # an entry had packets=/bytes= counters

    noise: bool  # an unreadable line was conntrack-tools' stderr (sosreport merged it)
    binary_line: int  # the last feed's first line with a NUL byte, or 0

    def feed(self, buf: Any, skip_first_bad: bool = False) -> tuple[int, int, int]: ...
    def merge(self, other: Any, prefix: bytes = b"") -> None: ...
    def result(self) -> Rows: ...
    def top(self, limit: int) -> tuple[int, list[TopRow]]: ...
    def sample_every(self, n: int) -> None: ...


def make_aggregator(args: AggArgs, every: int = 1, force_python: bool = False) -> Aggregator:
    """An aggregator for these arguments: the C one when built (and not ``force_python``)."""
    agg: Aggregator
    if not force_python and accelerated():
        from ctdoctor.listing._fastscan import Aggregator as CAggregator  # optional: absent without a compiler

        agg = CAggregator(*args)
    else:
        agg = PyAggregator(*args)
    if every > 1:
        agg.sample_every(every)
    return agg


def _net(t: Net) -> Network:
    _fam, packed, prefix = t
    return ipaddress.ip_network((packed, prefix))


def in_nets(addr: bytes, nets: Iterable[Network]) -> bool:
    try:
        a = ipaddress.ip_address(addr.decode())
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


class Filter:
    """Which entries a query keeps, by their scan fields (the C aggregator applies the same rules)."""

    def __init__(self, states: Iterable[bytes] | None, protos: Iterable[bytes] | None, port: int,
                 src_nets: Iterable[Net] | None, dst_nets: Iterable[Net] | None):
        self.states = set(states) if states is not None else None
        self.protos = set(protos) if protos is not None else None
        self.port_b = str(port).encode() if port >= 0 else None  # ports are compared as scanned text
        self.src_nets = [_net(n) for n in src_nets] if src_nets else None
        self.dst_nets = [_net(n) for n in dst_nets] if dst_nets else None
        self.active = (self.states is not None or self.protos is not None or self.port_b is not None
                       or self.src_nets is not None or self.dst_nets is not None)

    def keeps(self, f: ScanFields) -> bool:
        if self.protos is not None and f[S_PROTO] not in self.protos:
            return False
        if self.states is not None:
            if not (f[S_LABEL] in self.states or (f[S_UNREPLIED] and b"UNREPLIED" in self.states)
                    or (f[S_ASSURED] and b"ASSURED" in self.states)):
                return False
        if self.port_b is not None and self.port_b != f[S_SPORT] and self.port_b != f[S_DPORT]:
            return False
        if self.src_nets is not None and not in_nets(f[S_SRC], self.src_nets):
            return False
        return self.dst_nets is None or in_nets(f[S_DST], self.dst_nets)


class PyAggregator:
    """Pure-Python twin of ``_fastscan.Aggregator`` (the same line rules: ``listing.entry``); text
    is read by ``pyscan.ChunkScanner`` (one regex pass per chunk), which hands it distinct scan
    fields with their counts.

    ``rows`` is {(key, label): [entries, orig packets, orig bytes, reply packets, reply bytes]},
    what the C aggregator's ``result()`` gives; ``counts`` keeps each key's total as it grows, so
    ``top`` finds the winners without a grouping pass.
    """

    def __init__(self, fields: tuple[int, ...], states: Iterable[bytes] | None, protos: Iterable[bytes] | None,
                 port: int, src_nets: Iterable[Net] | None, dst_nets: Iterable[Net] | None):
        self.fields = fields
        self.filter = Filter(states, protos, port, src_nets, dst_nets)
        self.slots = tuple(FIELD_SLOT[x] for x in fields)
        self.filtered = self.filter.active
        self.counts: dict[bytes, int] = {}  # key -> entries (a row's total, kept as it grows)
        self.rows: Rows = {}  # (key, label) -> [entries, opk, ob, rpk, rb]
        self._matched = self._total = 0
        self._accounting = False  # an entry had packets= and bytes= (nf_conntrack_acct)
        self.noise = False  # an unreadable line was conntrack-tools' or sysctl's stderr
        self.binary_line = 0  # the last feed's first line with a NUL byte, or 0
        self.scanner: ChunkScanner | None = None  # the ChunkScanner that reads text into this table (maybe shared)
        self.disposable = False  # its rows may be taken over by a merge (a table a reader process sent)
        self.parts: list[PyAggregator] = []  # merged tables kept apart until their rows are asked for
        self.every, self._tick = 1, 0  # count only every n-th entry taken (sample_every)

    def sample_every(self, n: int) -> None:
        """Count only the 1st, (n+1)-th, (2n+1)-th ... entry taken from now on, as the C aggregator
        does: a sample by position in the read (a dump's order follows the kernel's hash, not the keys)."""
        if n < 1:
            raise ValueError("sample_every needs n >= 1")
        self.every, self._tick = n, 0
        self.filtered = self.filtered or n > 1  # the unfiltered fold would count everything

    def feed(self, buf: Any, skip_first_bad: bool = False) -> tuple[int, int, int]:
        """(lines, unreadable lines, first unreadable line or 0), as the C scanner returns."""
        if self.scanner is None:
            self.scanner = ChunkScanner([self])
        return self.scanner.feed(buf, skip_first_bad)

    @property
    def total(self) -> int:
        self._settle()
        return self._total

    @property
    def matched(self) -> int:
        self._settle()
        return self._matched

    @property
    def accounting(self) -> bool:
        """An entry had packets/bytes counters (nf_conntrack_acct)."""
        self._settle()
        return self._accounting

    def add_totals(self, total: int, matched: int) -> None:
        """Entries a fold put straight into ``table``."""
        self._total += total
        self._matched += matched

    def set_table(self, counts: dict[bytes, int], rows: Rows, total: int, matched: int, accounting: bool) -> None:
        """Take over a table another process counted (see ``table``)."""
        self.counts, self.rows, self._total, self._matched, self._accounting = counts, rows, total, matched, accounting

    def table(self) -> tuple[dict[bytes, int], Rows, int, int, bool]:
        """The counts, rows, totals and accounting flag, as builtins (for marshal)."""
        self._settle()
        return self.counts, self.rows, self._total, self._matched, self._accounting

    def take(self, f: ScanFields, n: int) -> None:
        """``n`` entries with the scan fields ``f`` (see fields.S_*)."""
        self._total += n
        if f[S_ACCT]:
            self._accounting = True
        if self.every > 1:  # entries tick .. tick+n-1; those at a multiple of every are counted
            t, self._tick = self._tick, self._tick + n
            n = (t + n - 1) // self.every - (t - 1) // self.every
            if not n:
                return
        if self.filter.active and not self.filter.keeps(f):
            return
        self._matched += n
        self.add(SEP.join([f[s] for s in self.slots]), f[S_LABEL], n, f[S_OPK], f[S_OB], f[S_RPK],  # type: ignore[misc]
                 f[S_RB])  # (the key slots all hold bytes)

    def add(self, key: bytes, lab: bytes, n: int, opk: int = 0, ob: int = 0, rpk: int = 0, rb: int = 0) -> None:
        """``n`` entries under (key, label), each with these counters (sums saturate at 2^64-1)."""
        self.counts[key] = self.counts.get(key, 0) + n
        k = (key, lab)
        v = self.rows.get(k)
        if v is None:
            self.rows[k] = [n, min(opk * n, U64), min(ob * n, U64), min(rpk * n, U64), min(rb * n, U64)]
        else:
            v[0] += n
            if opk or ob or rpk or rb:
                v[1] = min(v[1] + opk * n, U64)
                v[2] = min(v[2] + ob * n, U64)
                v[3] = min(v[3] + rpk * n, U64)
                v[4] = min(v[4] + rb * n, U64)

    def _settle(self) -> None:
        """Fold what the scanner still holds (its counts are not in the table until then)."""
        if self.scanner is not None:
            self.scanner.fold()

    def result(self) -> Rows:
        """{(key, label): [count, opk, ob, rpk, rb]}, as the C aggregator returns."""
        self._settle()
        self._absorb()
        return self.rows

    def merge(self, other: Any, prefix: bytes = b"") -> None:
        """Add another aggregator's counts, its keys prefixed. A disposable one (a table a reader
        process sent) is kept as a part: ``top`` adds up the parts' counts per key and reads the
        label rows of the winning keys only, instead of merging every row."""
        self._settle()
        if isinstance(other, PyAggregator) and other.disposable and not prefix:
            other._settle()
            counts = other.counts  # the key totals now (common keys one by one, the rest at once)
            for k in counts.keys() & self.counts.keys():
                self.counts[k] += counts.pop(k)
            self.counts.update(counts)
            other.counts = {}
            self.parts.append(other)
        else:
            self._absorb()
            merge_rows(self.counts, self.rows, other, prefix)
        self._matched += other.matched
        self._total += other.total
        self._accounting = self._accounting or bool(getattr(other, "accounting", False))

    def _absorb(self) -> None:
        """The parts' rows into this table (for ``result``, or a merge with a prefix)."""
        parts, self.parts = self.parts, []
        for p in parts:
            for k in p.rows.keys() & self.rows.keys():
                cur, v = self.rows[k], p.rows.pop(k)
                cur[0] += v[0]
                if v[1] or v[2] or v[3] or v[4]:
                    for i in range(1, 5):
                        cur[i] = min(cur[i] + v[i], U64)
            self.rows.update(p.rows)  # (their counts are in self.counts since the merge)

    def top(self, limit: int) -> tuple[int, list[TopRow]]:
        """(groups, [(key, count, opk, ob, rpk, rb, {label: count})]) by count, then key bytes."""
        self._settle()
        counts = self.counts  # every key's total, the parts' included

        def order(kv: tuple[bytes, int]) -> tuple[int, bytes]:
            return -kv[1], kv[0]

        if 0 < limit < len(counts):
            best = heapq.nsmallest(limit, counts.items(), key=order)
        else:
            best = sorted(counts.items(), key=order)
        rank = {k: i for i, (k, _n) in enumerate(best)}
        sums: list[list[int]] = [[0, 0, 0, 0] for _ in best]
        mixes: list[dict[bytes, int]] = [{} for _ in best]
        for rows in [self.rows] + [p.rows for p in self.parts]:
            for (k, lab), v in rows.items():
                r = rank.get(k)
                if r is None:
                    continue
                mix = mixes[r]
                mix[lab] = mix.get(lab, 0) + v[0]
                if v[1] or v[2] or v[3] or v[4]:
                    s = sums[r]
                    for i in range(4):
                        s[i] = min(s[i] + v[i + 1], U64)
        return len(counts), [(k, n, *sums[i], mixes[i]) for i, (k, n) in enumerate(best)]  # type: ignore[misc]


def merge_rows(counts: dict[bytes, int], rows: Rows, other: Aggregator, prefix: bytes) -> None:
    """Another aggregator's flat result (C or Python) into counts and rows, keys prefixed."""
    for (k, lab), v in other.result().items():
        key = (prefix + k, lab)
        counts[key[0]] = counts.get(key[0], 0) + v[0]
        cur = rows.get(key)
        if cur is None:
            rows[key] = list(v)
        else:
            cur[0] += v[0]
            if v[1] or v[2] or v[3] or v[4]:
                for i in range(1, 5):
                    cur[i] = min(cur[i] + v[i], U64)
