"""Who fills the table: stream a listing, aggregate by keys, never hold one object per entry.

Two aggregators with one interface and identical results: the C one
(``ctdoctor.listing._fastscan``, built when a compiler is there) and ``PyAggregator``
(pure Python, on ``scan.scan_line``: the same line rules). ``CTDOCTOR_NO_ACCEL=1`` forces the
pure-Python one. Big files are split at line boundaries across processes;
streams (live /proc through a netns pipe, stdin, gzip) are read in a thread
while the C scanner, which releases the GIL, parses the previous chunk.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from enum import Enum
from typing import TYPE_CHECKING, Any

from ctdoctor.errors import InputError, UsageError
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.scan import (
    S_ACCT,
    S_ASSURED,
    S_DPORT,
    S_DST,
    S_L3,
    S_LABEL,
    S_MARK,
    S_OB,
    S_OPK,
    S_PROTO,
    S_RB,
    S_RDST,
    S_RPK,
    S_RSRC,
    S_SPORT,
    S_SRC,
    S_UNREPLIED,
    S_ZONE,
    U64,
)

if TYPE_CHECKING:  # types for mypy; not built at run time (ctdoctor top starts faster)
    from typing import Protocol, TypedDict

    class Aggregator(Protocol):
        """What ``_fastscan.Aggregator`` and ``PyAggregator`` both are."""

        total: int
        matched: int
        accounting: bool  # an entry had packets=/bytes= counters
        noise: bool  # an unreadable line was conntrack-tools' stderr (sosreport merged it)
        binary_line: int  # the last feed's first line with a NUL byte, or 0

        def feed(self, buf: bytes, skip_first_bad: bool = False) -> tuple[int, int, int]: ...
        def merge(self, other: Any, prefix: bytes = b"") -> None: ...
        def result(self) -> dict: ...
        def top(self, limit: int) -> tuple[int, list]: ...
        def sample_every(self, n: int) -> None: ...

    class Row(TypedDict, total=False):
        """One row of ``top``: its key values, count, share of what was read, state mix, packets/bytes."""

        key: dict[str, Any]
        count: int
        share: float
        states: dict[str, int]
        packets: int
        bytes: int
        rate: float  # top --rate only


# field ids shared with _fastscan.c
F_SRC, F_DST, F_SPORT, F_DPORT, F_STATE, F_PROTO, F_ZONE, F_MARK, F_RSRC, F_RDST, F_L3 = range(11)
KEYS = {
    "src": (F_SRC,), "dst": (F_DST,), "sport": (F_SPORT,), "dport": (F_DPORT,), "pair": (F_SRC, F_DST, F_DPORT),
    "state": (F_STATE,), "proto": (F_PROTO,), "zone": (F_ZONE,), "mark": (F_MARK,),
    "reply-src": (F_RSRC,), "reply-dst": (F_RDST,), "l3": (F_L3,), "netns": (),
    "pod": (), "k8s-namespace": (),
}
# keys that group by where an entry lives (the netns, or the pod / Kubernetes namespace that holds it):
# the reader puts that name in front of the entry's key
NS_KEYS = ("netns", "pod", "k8s-namespace")
CHUNK = 1 << 20
SEP = b"\x1f"


def label(e) -> str:
    """The state shown in a row's mix: the protocol state, else what the flags say."""
    if e.state:
        return e.state
    if e.offload:
        return e.offload
    if e.unreplied:
        return "UNREPLIED"
    if e.assured:
        return "ASSURED"
    return "REPLIED"


class PyAggregator:
    """Pure-Python twin of ``_fastscan.Aggregator`` (same line rules: ``ctdoctor.listing.scan``); text is
    read by ``pyscan.ChunkScanner`` (one regex pass per chunk), which hands it distinct scan
    fields with their counts.

    ``rows`` is {(key, label): [entries, orig packets, orig bytes, reply packets, reply bytes]},
    what the C aggregator's ``result()`` gives; ``counts`` keeps each key's total as it grows, so
    ``top`` finds the winners without a grouping pass.
    """

    def __init__(self, fields, states, protos, port, src_nets, dst_nets):
        self.fields = fields
        self.states = set(states) if states is not None else None
        self.protos = set(protos) if protos is not None else None
        self.port = port
        self.port_b = str(port).encode() if port >= 0 else None  # ports are compared as scanned text
        self.src_nets = [_net(n) for n in src_nets] if src_nets else None
        self.dst_nets = [_net(n) for n in dst_nets] if dst_nets else None
        self.slots = tuple(_FIELD_SLOT[x] for x in fields)
        self.filtered = (self.states is not None or self.protos is not None or self.port_b is not None
                         or self.src_nets is not None or self.dst_nets is not None)
        self.counts: dict[bytes, int] = {}  # key -> entries (a row's total, kept as it grows)
        self.rows: dict[tuple[bytes, bytes], list[int]] = {}  # (key, label) -> [entries, opk, ob, rpk, rb]
        self._matched = self._total = 0
        self._accounting = False  # an entry had packets= and bytes= (nf_conntrack_acct)
        self.noise = False  # an unreadable line was conntrack-tools' or sysctl's stderr
        self.binary_line = 0  # the last feed's first line with a NUL byte, or 0
        self.scanner = None  # the ChunkScanner that reads text into this table (maybe shared)
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

    def feed(self, buf: bytes, skip_first_bad: bool = False):
        """(lines, unreadable lines, first unreadable line or 0), as the C scanner returns."""
        if self.scanner is None:
            from ctdoctor.listing.pyscan import ChunkScanner

            self.scanner = ChunkScanner([self])
        return self.scanner.feed(buf, skip_first_bad)

    def feed_entries(self, entries) -> int:
        """Decoded entries straight in (the pure-Python ctnetlink path); returns how many."""
        n = 0
        for e in entries:
            self.take(entry_fields(e), 1)
            n += 1
        return n

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

    def take(self, f, n: int) -> None:
        """``n`` entries with the scan fields ``f`` (see scan.S_*)."""
        self._total += n
        if f[S_ACCT]:
            self._accounting = True
        lab = f[S_LABEL]
        if self.every > 1:  # entries tick .. tick+n-1; those at a multiple of every are counted
            t, self._tick = self._tick, self._tick + n
            n = (t + n - 1) // self.every - (t - 1) // self.every
            if not n:
                return
        if self.protos is not None and f[S_PROTO] not in self.protos:
            return
        if self.states is not None:
            if not (lab in self.states or (f[S_UNREPLIED] and b"UNREPLIED" in self.states)
                    or (f[S_ASSURED] and b"ASSURED" in self.states)):
                return
        if self.port_b is not None and self.port_b != f[S_SPORT] and self.port_b != f[S_DPORT]:
            return
        if self.src_nets is not None and not _in(f[S_SRC], self.src_nets):
            return
        if self.dst_nets is not None and not _in(f[S_DST], self.dst_nets):
            return
        self._matched += n
        self.add(SEP.join([f[s] for s in self.slots]), lab, n, f[S_OPK], f[S_OB], f[S_RPK], f[S_RB])

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

    def result(self):
        """{(key, label): [count, opk, ob, rpk, rb]}, as the C aggregator returns."""
        self._settle()
        self._absorb()
        return self.rows

    def merge(self, other, prefix: bytes = b"") -> None:
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
            _merge_rows(self.counts, self.rows, other, prefix)
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

    def top(self, limit: int):
        """(groups, [(key, count, opk, ob, rpk, rb, {label: count})]) by count, then key bytes."""
        import heapq

        self._settle()
        counts = self.counts  # every key's total, the parts' included
        order = lambda kv: (-kv[1], kv[0])  # noqa: E731 - the one sort order, used twice
        if 0 < limit < len(counts):
            best = heapq.nsmallest(limit, counts.items(), key=order)
        else:
            best = sorted(counts.items(), key=order)
        rank = {k: i for i, (k, _n) in enumerate(best)}
        sums: list[list] = [[0, 0, 0, 0, {}] for _ in best]
        for rows in [self.rows] + [p.rows for p in self.parts]:
            for (k, lab), v in rows.items():
                r = rank.get(k)
                if r is None:
                    continue
                s = sums[r]
                s[4][lab] = s[4].get(lab, 0) + v[0]
                if v[1] or v[2] or v[3] or v[4]:
                    for i in range(4):
                        s[i] = min(s[i] + v[i + 1], U64)
        return len(counts), [(k, n, *sums[i]) for i, (k, n) in enumerate(best)]


def _merge_rows(counts: dict, rows: dict, other, prefix: bytes) -> None:
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


# scan tuple slot of each key field
_FIELD_SLOT = {F_SRC: S_SRC, F_DST: S_DST, F_SPORT: S_SPORT, F_DPORT: S_DPORT, F_STATE: S_LABEL,
               F_PROTO: S_PROTO, F_ZONE: S_ZONE, F_MARK: S_MARK, F_RSRC: S_RSRC, F_RDST: S_RDST, F_L3: S_L3}


def save_fields(ln: bytes):
    """A ``conntrack -o save`` line as scan fields; its mark is unknown (save never prints it): b""."""
    from ctdoctor.sources.entries import EntryParseError, parse_save_line

    try:
        e = parse_save_line(ln.decode("utf-8", "replace"))
    except EntryParseError:
        return None
    return entry_fields(e, counters=False)


def entry_fields(e, counters: bool = True):
    """An ``Entry`` (a decoded ctnetlink message, a save line) as the scan fields tuple (see scan.S_*):
    what the aggregator takes, without printing the entry and scanning it again."""
    o, r = e.orig, e.reply

    def num(v):
        return b"" if v is None else str(v).encode()

    def cnt(v):
        return min(v, U64) if counters and v is not None else 0

    zone = e.zone if e.zone is not None else o.zone if o.zone is not None else r.zone
    acct = counters and any(v is not None for v in (o.packets, o.bytes, r.packets, r.bytes))
    return (e.l3.encode(), e.proto.encode(), label(e).encode(), o.src.encode(), o.dst.encode(), num(o.sport),
            num(o.dport), r.src.encode(), r.dst.encode(), num(e.mark), str(zone or 0).encode(), e.unreplied,
            e.assured, cnt(o.packets), cnt(o.bytes), cnt(r.packets), cnt(r.bytes), acct)


def _net(t):
    import ipaddress

    _fam, packed, prefix = t
    return ipaddress.ip_network((packed, prefix))


def _in(addr: bytes, nets) -> bool:
    import ipaddress

    try:
        a = ipaddress.ip_address(addr.decode())
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


# ---- the query ----------------------------------------------------------------------


class Query:
    """What ``top`` groups by (``by``) and which entries it keeps (the filters)."""

    def __init__(self, by: list[str], states: list[str] | None = None, protos: list[str] | None = None,
                 port: int = -1, src: list[str] | None = None, dst: list[str] | None = None):
        self.by, self.states, self.protos, self.port, self.src, self.dst = by, states, protos, port, src, dst
        self.every = 1  # count every n-th entry only (a sample by position; see Aggregator.sample_every)

    def __repr__(self) -> str:
        return (f"Query(by={self.by!r}, states={self.states!r}, protos={self.protos!r}, port={self.port!r}, "
                f"src={self.src!r}, dst={self.dst!r})")

    def fields(self) -> tuple[int, ...]:
        out: list[int] = []
        for k in self.by:
            out.extend(KEYS[k])
        return tuple(out)

    def args(self):
        import ipaddress

        def nets(cidrs):
            if not cidrs:
                return None
            out = []
            for c in cidrs:
                n = ipaddress.ip_network(c, strict=False)
                out.append((n.version, n.network_address.packed, n.prefixlen))
            return tuple(out)

        return (self.fields(),
                tuple(s.encode() for s in self.states) if self.states else None,
                tuple(p.encode() for p in self.protos) if self.protos else None,
                self.port, nets(self.src), nets(self.dst))

    def aggregator(self, force_python: bool = False):
        agg: Any
        if not force_python and accelerated():
            from ctdoctor.listing._fastscan import Aggregator

            agg = Aggregator(*self.args())
        else:
            agg = PyAggregator(*self.args())
        if self.every > 1:
            agg.sample_every(self.every)
        return agg


def parse_query(by: str, state: str | None, proto: str | None, port: int | None, src: str | None,
                dst: str | None) -> Query:
    import ipaddress

    keys = [k.strip() for k in by.split(",") if k.strip()]
    if not keys:
        raise UsageError("--by needs at least one key")
    for k in keys:
        if k not in KEYS:
            raise UsageError(f"--by {k}: unknown key (use: {', '.join(KEYS)})")
    if len(keys) != len(set(keys)):
        raise UsageError("--by: a key is given twice")
    if len([k for k in keys if k in NS_KEYS]) > 1:
        raise UsageError("--by: use one of netns, pod, k8s-namespace")
    q = Query(keys)
    if state:
        q.states = [s.strip().upper() for s in state.split(",") if s.strip()]
        from ctdoctor.model.kernel import check_states

        check_states(q.states)
    if proto:
        q.protos = [p.strip().lower() for p in proto.split(",") if p.strip()]
    if port is not None:
        if not 0 <= port <= 65535:
            raise UsageError("--port must be 0..65535")
        q.port = port
    for name, val in (("src", src), ("dst", dst)):
        if val:
            cidrs = [c.strip() for c in val.split(",") if c.strip()]
            for c in cidrs:
                try:
                    ipaddress.ip_network(c, strict=False)
                except ValueError:
                    raise UsageError(f"--{name} {c}: not an address or CIDR") from None
            setattr(q, name, cidrs)
    return q


# ---- feeding ------------------------------------------------------------------------------


class Tally:
    """What one or more listings gave: an aggregator plus line facts."""

    def __init__(self, query: Query, agg: Aggregator | None = None, lines: int = 0, unreadable: int = 0,
                 first_bad: tuple[int, str] | None = None):
        self.query = query
        self.agg = agg
        self.lines = lines
        self.unreadable = unreadable  # lines that were not an entry (skipped and counted)
        self.first_bad = first_bad  # (line number, text) of the first of them

    @property
    def total(self) -> int:
        return self.agg.total if self.agg is not None else 0

    @property
    def matched(self) -> int:
        return self.agg.matched if self.agg is not None else 0

    @property
    def accounting(self) -> bool:
        """The entries carry packets/bytes counters (nf_conntrack_acct): rows show their sums."""
        return self.agg is not None and bool(self.agg.accounting)

    def note_bad(self, count: int, line_no: int, text: bytes) -> None:
        self.unreadable += count
        if count and self.first_bad is None:
            self.first_bad = (line_no, text.decode("utf-8", "replace").strip()[:80])

    def check(self) -> Tally:
        """Reject a listing most of whose lines are not entries; a few bad lines are only counted."""
        if self.unreadable and self.unreadable * 2 > self.total + self.unreadable:
            n, text = self.first_bad or (0, "")
            if text.startswith(("<?xml", "<conntrack", "<flow")):
                raise InputError("an XML listing (conntrack -L -o xml) is not read: save the table with "
                                 "`conntrack -L -o extended` (or copy /proc/net/nf_conntrack) and read that")
            raise InputError(f"line {n}: not a conntrack entry: {text!r} ({self.unreadable} of "
                             f"{self.total + self.unreadable} lines unreadable: not a conntrack listing)")
        return self

    def merge(self, other: Tally, prefix: bytes = b"") -> None:
        self.unreadable += other.unreadable
        if self.first_bad is None:
            self.first_bad = other.first_bad
        if other.agg is None:
            return
        py = isinstance(other.agg, PyAggregator) or isinstance(self.agg, PyAggregator)
        if self.agg is None and not prefix:
            self.agg = other.agg  # adopt it: no copy
            self.lines += other.lines
            return
        if self.agg is None:
            self.agg = self.query.aggregator(force_python=py)
        elif py and not isinstance(self.agg, PyAggregator):
            # one listing needed the Python parser (save format): continue in Python
            converted = self.query.aggregator(force_python=True)
            converted.merge(self.agg)
            self.agg = converted
        self.agg.merge(other.agg, prefix)
        self.lines += other.lines


class Feeder:
    """The aggregators of one or more queries, fed together from one read: C ones take each
    parsed line in turn (``feed_many``), Python ones share one regex pass (``ChunkScanner``)."""

    def __init__(self, queries: list[Query], force_python: bool = False):
        self.queries = queries
        self.aggs: list[Any] = [q.aggregator(force_python) for q in queries]
        self.python = isinstance(self.aggs[0], PyAggregator)
        if self.python and len(self.aggs) > 1:
            from ctdoctor.listing.pyscan import ChunkScanner

            shared = ChunkScanner(self.aggs)
            for a in self.aggs:
                a.scanner = shared

    def to_python(self) -> None:
        """Start over with Python aggregators (a save-format listing: only Python reads it)."""
        if not self.python:
            self.__init__(self.queries, force_python=True)  # type: ignore[misc]

    def feed(self, buf, skip_first_bad: bool = False) -> tuple[int, int, int]:
        a = self.aggs[0]
        if len(self.aggs) == 1:
            return a.feed(buf, skip_first_bad)
        if self.python:
            return a.scanner.feed(buf, skip_first_bad)
        from ctdoctor.listing._fastscan import feed_many

        return feed_many(tuple(self.aggs), buf, skip_first_bad)

    def feed_netlink(self, buf) -> tuple[int, int, bool]:
        """A ctnetlink receive buffer (dump or events): (entries, malformed messages, done)."""
        if not self.python:
            from ctdoctor.listing._fastscan import netlink_feed

            return netlink_feed(tuple(self.aggs), buf)
        from ctdoctor.sources.ctnetlink import decode_messages

        entries, malformed, done = decode_messages(buf)
        fields = [entry_fields(e) for e in entries]
        for a in self.aggs:
            for f in fields:
                a.take(f, 1)
        return len(fields), malformed, done

    @property
    def binary_line(self) -> int:
        return self.aggs[0].binary_line

    @property
    def noise(self) -> bool:
        return any(a.noise for a in self.aggs)

    def tallies(self, lines: int, bad: int, first_bad: tuple[int, str] | None) -> list[Tally]:
        return [Tally(q, a, lines, bad, first_bad) for q, a in zip(self.queries, self.aggs, strict=True)]


class _Noise:
    """Removes conntrack-tools/sysctl stderr lines that sosreport merged into a listing,
    rejoining an entry split by them; keeps line numbers (a removed line becomes empty)."""

    def __init__(self):
        self.carry = b""

    def clean(self, chunk: bytes) -> bytes:
        if self.carry:
            nl = chunk.find(b"\n")
            head = chunk if nl < 0 else chunk[:nl]
            chunk = self.carry + head + b"\n" + (b"" if nl < 0 else chunk[nl:])
            self.carry = b""
        if not may_be_noise(chunk):
            return chunk
        out = []
        lines = chunk.split(b"\n")
        i = 0
        while i < len(lines):
            ln = lines[i]
            if b"(conntrack-tools)" in ln or b"nfct_labelmap" in ln:
                from ctdoctor.sources.entries import NOISE_RE

                cleaned = NOISE_RE.sub("", ln.decode("utf-8", "replace")).encode()
                if cleaned.strip():
                    if i + 1 < len(lines):
                        out.append(cleaned + lines[i + 1])
                        out.append(b"")
                        i += 2
                        continue
                    self.carry = cleaned  # the continuation is in the next chunk
                    i += 1
                    continue
                out.append(b"")
            else:
                out.append(ln)
            i += 1
        return b"\n".join(out)


def may_be_noise(buf, start: int = 0, end: int | None = None) -> bool:
    """Could buf[start:end] hold conntrack-tools' stderr? One memchr each for a character the
    noise has and listings rarely do ('(' of "(conntrack-tools)", 'w' of "nfct_labelmap_new",
    which only the "unknown" protocol name has besides) before the slower substring searches."""
    end = len(buf) if end is None else end
    return ((buf.find(b"(", start, end) >= 0 and buf.find(b"(conntrack-tools)", start, end) >= 0)
            or (buf.find(b"w", start, end) >= 0 and buf.find(b"nfct_labelmap", start, end) >= 0))


class _Reader:
    """Reads a stream in a thread of its own into a few buffers used in turn, so the kernel's
    formatting of /proc/net/nf_conntrack (or a pipe, a gzip file) runs while the scanner reads
    the previous buffer, with no allocation or copy per chunk. Iterating gives (buffer, length);
    a buffer goes back to the reader when the next one is asked for.

    ``fill(buf)`` -> bytes read into buf, 0 at the end; ``last(buf, n)`` -> True when nothing
    comes after this buffer (a netlink dump's NLMSG_DONE: reading on would wait for ever)."""

    def __init__(self, fill, size: int = CHUNK, count: int = 3, last=None):
        self.fill, self.last = fill, last
        self.free: queue.Queue = queue.Queue()
        self.full: queue.Queue = queue.Queue()
        for _ in range(count):
            self.free.put(bytearray(size))
        self.stop = self.started = False
        self.thread = threading.Thread(target=self._run, name="ctdoctor-reader", daemon=True)

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.thread.start()

    def close(self) -> None:
        """Stop a reader whose buffers will not be read (it returns when it next wants a free one)."""
        self.stop = True
        self.free.put(None)
        if self.started:
            self.thread.join(timeout=1)

    def _run(self) -> None:
        while True:
            buf = self.free.get()
            if buf is None or self.stop:
                return
            try:
                n = self.fill(buf) or 0
            except BaseException as e:  # the consumer raises it
                self.full.put(e)
                return
            self.full.put((buf, n))
            try:
                done = n == 0 or (self.last is not None and self.last(buf, n))
            except BaseException as e:  # a netlink error message (EPERM): the consumer raises it
                self.full.put(e)
                return
            if done:
                if n:
                    self.full.put((None, 0))
                return

    def __iter__(self):
        self.start()
        prev = None
        try:
            while True:
                if prev is not None:
                    self.free.put(prev)
                item = self.full.get()
                if isinstance(item, BaseException):
                    if isinstance(item, InputError):
                        raise item
                    if isinstance(item, (OSError, EOFError)):
                        raise InputError(f"listing is truncated or corrupt ({item})") from None
                    raise item
                buf, n = item
                if not n:
                    return
                prev = buf
                yield buf, n
        finally:
            # a reader waiting for a free buffer sees None and returns; one blocked reading a pipe
            # stays (a daemon) until data comes
            self.close()


class StartedListing:
    """An unbuffered live listing whose reader thread (C ``read_full``, C-scanner-sized buffers) is
    already running: the kernel formats it while the caller does the rest of its setup. Read it
    once with ``tally_stream``; ``close()`` stops the reader and closes the file."""

    def __init__(self, stream, inode: int | None = None):
        self.stream, self.inode = stream, inode
        # 8 MiB ahead: what the kernel formats of a big table while the setup runs (~50 ms)
        self.reader = _Reader(_filler(stream, python=False), size=CHUNK, count=8)
        self.reader.start()

    def close(self) -> None:
        self.reader.close()
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _line_text(buf, n: int) -> bytes:
    """Line n (from 1) of a buffer, for a message."""
    pos = 0
    for _ in range(n - 1):
        pos = buf.find(b"\n", pos) + 1
        if pos == 0:
            return b""
    end = buf.find(b"\n", pos)
    return bytes(buf[pos:end if end >= 0 else len(buf)])


def _binary(line_no: int):
    return InputError(f"line {line_no}: binary data, not a conntrack listing")


def tally_stream(f, query: Query, *, skip_first_partial: bool = False, force_python: bool = False,
                 clean_noise: bool = True) -> Tally:
    """Aggregate a binary stream; a reader thread keeps the next chunk coming while this one is parsed."""
    return tally_stream_multi(f, [query], skip_first_partial=skip_first_partial, force_python=force_python,
                              clean_noise=clean_noise)[0]


class _StreamTally:
    """The consumer side of ``tally_stream_multi``: whole lines of each chunk to the feeder, the
    partial last line joined with the next chunk's first, line numbers and unreadable lines."""

    def __init__(self, feeder: Feeder, skip_first_partial: bool, clean_noise: bool):
        self.feeder = feeder
        self.skip = skip_first_partial
        self.noise = _Noise() if clean_noise else None
        self.save_format: bool | None = None
        self.line_base = self.bad = 0
        self.first_bad: tuple[int, str] | None = None

    def chunk(self, buf: bytearray, n: int, carry: bytes) -> bytes:
        """Feed the whole lines of buf[:n] (after ``carry``, the previous partial line); returns
        the new partial line."""
        start = 0
        if carry:
            nl = buf.find(b"\n", 0, n)
            if nl < 0:
                carry += bytes(buf[:n])
                if len(carry) > 64 << 20:
                    raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
                return carry
            head = carry + bytes(buf[:nl + 1])
            self.lines(head, 0, len(head))
            start = nl + 1
        last = buf.rfind(b"\n", start, n)
        if last < start:
            return bytes(buf[start:n])
        self.lines(buf, start, last + 1)
        return bytes(buf[last + 1:n])

    def lines(self, buf, start: int, end: int) -> None:
        """The whole lines of buf[start:end] into the feeder (fed as a view: no copy)."""
        if self.noise is not None and (self.noise.carry or may_be_noise(buf, start, end)):
            buf = self.noise.clean(bytes(buf[start:end]))
            start, end = 0, len(buf)
        if self.save_format is None:
            self.save_format = bytes(buf[start:start + 64]).lstrip()[:3] in (b"-A ", b"-I ")
            if self.save_format:
                self.feeder.to_python()
        first = self.line_base == 0 and self.skip
        with memoryview(buf) as view:
            lines, nbad, fb = self.feeder.feed(view[start:end], first)
        if self.feeder.binary_line:
            raise _binary(self.line_base + self.feeder.binary_line)
        if nbad:
            self.bad += nbad
            if self.first_bad is None:
                text = _line_text(bytes(buf[start:end]), fb)
                self.first_bad = (self.line_base + fb, text.decode("utf-8", "replace").strip()[:80])
        self.line_base += lines


def tally_stream_multi(f, queries: list[Query], *, skip_first_partial: bool = False,
                       force_python: bool = False, clean_noise: bool = True) -> list[Tally]:
    """One read of the stream, several aggregations (the doctor's state mix and top keys).
    ``clean_noise``: the stream may hold conntrack-tools' stderr (a saved file, stdin; never
    the kernel's own listing)."""
    if getattr(f, "is_netlink_dump", False):
        return _tally_netlink(f, queries, force_python)
    st = _StreamTally(Feeder(queries, force_python), skip_first_partial, clean_noise)
    carry = b""
    reader = f.reader if isinstance(f, StartedListing) else \
        _Reader(_filler(f, st.feeder.python), size=PY_CHUNK if st.feeder.python else CHUNK)
    with _no_gc():
        for buf, n in reader:
            carry = st.chunk(buf, n, carry)
        if carry:
            st.lines(carry, 0, len(carry))  # the last line, without its newline
    return [t.check() for t in st.feeder.tallies(st.line_base, st.bad, st.first_bad)]


def _filler(f, python: bool):
    """How the reader fills a buffer from f. An unbuffered file (a live /proc listing, which gives a
    page per read) is read until the buffer is full: by C ``read_full`` without the GIL, else in
    a loop."""
    import io

    if not isinstance(f, io.FileIO):
        return f.readinto  # buffered: its readinto fills the buffer
    if not python and accelerated():
        from functools import partial

        from ctdoctor.listing._fastscan import read_full

        return partial(read_full, f.fileno())

    def fill(buf) -> int:  # a raw file's readinto is one read(): one page of /proc
        got = 0
        with memoryview(buf) as view:
            while got < len(buf):
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
        return got

    return fill


def _tally_netlink(dump, queries: list[Query], force_python: bool) -> list[Tally]:
    """A ctnetlink dump straight into the aggregators, no listing text in between; the next
    receive buffer is read (the kernel dumps the next part) while this one is counted, unless the
    dump asks for the cheaper read in turn (``overlap`` False)."""
    from ctdoctor.sources.ctnetlink import has_done

    feeder = Feeder(queries, force_python or not accelerated())
    entries = malformed = 0
    sock = dump.start()
    parts = _Reader(sock.recv_into, size=1 << 20, last=has_done) if getattr(dump, "overlap", True) \
        else _parts_in_turn(sock)
    try:
        with _no_gc():
            for buf, n in parts:
                with memoryview(buf) as view:
                    k, bad, done = feeder.feed_netlink(view[:n])
                entries += k
                malformed += bad
                if done:
                    break
    except OSError as e:  # NLMSG_ERROR in the dump, or the socket failed
        from ctdoctor.sources.ctnetlink import CtnetlinkError

        raise CtnetlinkError(f"ctnetlink dump failed: {e.strerror or e}") from None
    first_bad = (entries + 1, "a malformed ctnetlink message") if malformed else None
    return [t.check() for t in feeder.tallies(entries + malformed, malformed, first_bad)]


def _parts_in_turn(sock):
    """A dump's receive buffers read in this thread, one after the other."""
    from ctdoctor.sources.ctnetlink import has_done

    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        yield buf, n
        if not n or has_done(buf, n):
            return


class _no_gc:
    """No cyclic garbage collection while a listing is read: the tables are many small lists and
    dicts without cycles, and the collector would walk them again and again as they grow."""

    def __enter__(self):
        import gc

        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        import gc

        if self.was:
            gc.enable()


class RangeEnd(Enum):
    """How a worker's range of a saved listing ended."""

    DONE = "done"
    BINARY = "binary"  # NUL bytes: not a listing
    NOISE = "noise"  # conntrack-tools stderr merged in: the whole file goes through the noise filter


def tally_file(path: str, query: Query, *, workers: int | None = None, force_python: bool = False) -> Tally:
    """Aggregate a plain file in ranges split at line boundaries, read side by side: one thread
    each with the C scanner (it and file reads release the GIL), one process each with the
    pure-Python one (the regex engine holds the GIL). The first range is read here."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    save = head.lstrip()[:3] in (b"-A ", b"-I ")
    py = force_python or not accelerated()
    workers = workers or min(os.cpu_count() or 1, 8)
    if save or size < (8 << 20) or workers < 2:
        with open(path, "rb") as f:
            return tally_stream(f, query, force_python=py or save)
    if py:  # the first range is read here, and its table is merged with the others after: a bit less
        first = size * 19 // (20 * workers)
        bounds = [0] + [first + (size - first) * i // (workers - 1) for i in range(workers)]
    else:
        bounds = [size * i // workers for i in range(workers + 1)]
    ranges = list(itertools.pairwise(bounds))
    parts = _ranges_in_processes(path, ranges, query) if py else _ranges_in_threads(path, ranges, query)
    total = Tally(query)
    base = 0
    for tally, bin_line, kind in parts:
        if kind is RangeEnd.NOISE:
            with open(path, "rb") as f:
                return tally_stream(f, query, force_python=py)
        if kind is RangeEnd.BINARY:
            raise _binary(base + bin_line)
        if tally.first_bad is not None:
            tally.first_bad = (base + tally.first_bad[0], tally.first_bad[1])
        total.merge(tally)
        base += tally.lines
    return total.check()


def _ranges_in_threads(path: str, ranges, query: Query) -> list:
    """The C scanner on each range in a thread of its own (reads and the scanner release the GIL)."""
    cuts = _line_starts(path, [s for s, _e in ranges] + [ranges[-1][1]])
    parts: list = [None] * len(ranges)

    def work(i):
        parts[i] = _tally_span(path, cuts[i], cuts[i + 1], query)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ranges))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return parts


def _line_starts(path: str, bounds: list[int]) -> list[int]:
    """Where the lines that start in each [bounds[i], bounds[i+1]) begin: byte spans of whole lines."""
    cuts = [bounds[0]]
    with open(path, "rb") as f:
        for b in bounds[1:-1]:
            f.seek(b - 1)
            cuts.append(max(b - 1 + len(f.readline()), cuts[-1]))  # after the newline at or past b - 1
    cuts.append(max(bounds[-1], cuts[-1]))
    return cuts


C_CHUNK = 4 << 20
PY_CHUNK = 256 << 10  # the regex's list of tuples stays in the caches (4 MiB chunks: a third slower)


def _tally_span(path: str, start: int, end: int, query: Query, force_python: bool = False):
    """The whole lines in bytes [start, end) of a file: read into one buffer, used again for
    every chunk (a new buffer per read costs a page fault per 4 KiB), and fed as views of it.
    Returns (tally, binary line or 0, kind)."""
    feeder = Feeder([query], force_python)
    tally = Tally(query, None)
    buf = bytearray(PY_CHUNK if feeder.python else C_CHUNK)
    lines = have = 0
    with open(path, "rb", buffering=0) as f, _no_gc():
        f.seek(start)
        left = end - start
        while left > 0 or have:
            with memoryview(buf) as view:
                n = f.readinto(view[have:have + min(len(buf) - have, left)]) if left > 0 else 0
            n = n or 0
            if left > 0 and n == 0:
                left = 0  # the file got shorter: read what is there
            left -= n
            have += n
            cut = have if left <= 0 else buf.rfind(b"\n", 0, have) + 1
            if cut == 0:  # no newline in a full buffer: one line longer than it
                if len(buf) >= 64 << 20:
                    raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
                buf.extend(bytes(len(buf)))
                continue
            with memoryview(buf) as view:
                k, nbad, fb = feeder.feed(view[:cut], False)
            if nbad and not feeder.binary_line:
                tally.note_bad(nbad, lines + fb, _line_text(buf, fb) if tally.first_bad is None else b"")
            if feeder.binary_line:
                return tally, lines + feeder.binary_line, RangeEnd.BINARY
            if feeder.noise:
                return tally, 0, RangeEnd.NOISE
            lines += k
            buf[:have - cut] = buf[cut:have]
            have -= cut
    tally.agg, tally.lines = feeder.aggs[0], lines
    return tally, 0, RangeEnd.DONE


def _ranges_in_processes(path: str, ranges, query: Query) -> list:
    """The pure-Python scanner on every range but the first in a forked child each, the first
    here; each child sends back its table (marshal: builtins only, the fastest to write and
    read), which is small next to the text it read."""
    import marshal

    cuts = _line_starts(path, [s for s, _e in ranges] + [ranges[-1][1]])
    if threading.active_count() > 1:  # forking a threaded process is unsafe: read them in turn
        return [_tally_span(path, cuts[i], cuts[i + 1], query, True) for i in range(len(ranges))]
    from ctdoctor.listing import canonical, pyscan

    canonical.grammar(pyscan.needs(query.aggregator(force_python=True)))  # compiled once, before the forks
    children = []
    try:
        for i in range(1, len(ranges)):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: read the range, send the result, never return
                code = 0
                try:
                    os.close(r)
                    with _no_gc():
                        tally, bin_line, kind = _tally_span(path, cuts[i], cuts[i + 1], query, True)
                        agg = tally.agg
                        table = None
                        if agg is not None:
                            agg._settle()
                            table = (agg.counts, agg.rows, agg.total, agg.matched, agg.accounting)
                        payload = marshal.dumps(("ok", tally.lines, tally.unreadable, tally.first_bad, bin_line,
                                                 kind.value, table))
                except BaseException as ex:
                    payload = marshal.dumps(("error", f"{type(ex).__name__}: {ex}"))
                    code = 1
                try:
                    with os.fdopen(w, "wb") as out:
                        out.write(payload)
                finally:
                    os._exit(code)
            os.close(w)
            children.append((pid, r))
        parts = [_tally_span(path, cuts[0], cuts[1], query, True)]
        if parts[0][0].agg is not None:
            parts[0][0].agg._settle()  # fold here while the children still read: not after, in the merge
        for _pid, r in children:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            parts.append(_range_result(data, query))
        return parts
    finally:
        for pid, _r in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _range_result(data: bytes, query: Query):
    import marshal

    if not data:
        raise InputError("a reader process ended without a result (killed?)")
    with _no_gc():
        got = marshal.loads(data)
    if got[0] != "ok":
        err = got[1]
        raise InputError(err.split(": ", 1)[1] if err.startswith("InputError: ") else f"reading failed: {err}")
    _, lines, unreadable, first_bad, bin_line, kind, table = got
    tally = Tally(query, None, lines, unreadable, tuple(first_bad) if first_bad else None)
    if table is not None:
        agg = PyAggregator(*query.args())
        agg.counts, agg.rows, agg._total, agg._matched, agg._accounting = table
        agg.disposable = True  # nothing else holds its rows: a merge takes them over
        tally.agg = agg  # type: ignore[assignment]  # PyAggregator is an Aggregator (the Protocol)
    return tally, bin_line, RangeEnd(kind)


# ---- rows ----------------------------------------------------------------------------------


def rows(tally: Tally, query: Query, limit: int | None) -> tuple[int, list[Row]]:
    """(number of groups, rows): key, count, share of the listed total, state mix, packets/bytes."""
    if tally.agg is None:
        return 0, []
    groups, top = tally.agg.top(limit or 0)
    total = tally.total or 1
    out: list[Row] = []
    for key, cnt, opk, ob, rpk, rb, labels in top:
        ns = None
        k = key
        if any(k in query.by for k in NS_KEYS):  # merged with the netns (pod, k8s namespace) name in front
            ns_b, _, k = key.partition(SEP)
            ns = ns_b.decode()
        vals = [v.decode("utf-8", "replace") for v in k.split(SEP)] if query.fields() else []
        row: Row = {"key": _key_dict(query, vals, ns), "count": cnt, "share": round(cnt / total, 6),
                    "states": {lab.decode(): n for lab, n in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))}}
        if tally.accounting:
            row["packets"], row["bytes"] = opk + rpk, ob + rb
        out.append(row)
    return groups, out


def _key_dict(query: Query, vals: list[str], ns: str | None = None) -> dict:
    key: dict = {}
    i = 0
    for k in query.by:
        n = len(KEYS[k])
        part = vals[i:i + n]
        i += n
        if k == "pair":
            key["pair"] = f"{part[0]}→{part[1]}" + (f":{part[2]}" if part[2] else "")
        elif k in NS_KEYS:
            key[k] = ns
        elif k in ("sport", "dport", "zone", "mark"):
            key[k] = int(part[0]) if part[0] else None
        else:
            key[k] = part[0]
    return key
