"""Who fills the table: stream a listing, aggregate by keys, never hold one object per entry.

Two aggregators with one interface and identical results: the C one
(``ctdoctor._fastscan``, built when a compiler is there) and ``PyAggregator``
(pure Python, on ``scan.scan_line``: the same line rules). ``CTDOCTOR_NO_ACCEL=1`` forces the
pure-Python one. Big files are split at line boundaries across processes;
streams (live /proc through a netns pipe, stdin, gzip) are read in a thread
while the C scanner, which releases the GIL, parses the previous chunk.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypedDict

from ctdoctor.accel import accelerated
from ctdoctor.errors import InputError, UsageError
from ctdoctor.scan import (
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
    scan_line,
)
from ctdoctor.sources.entries import NOISE_RE, EntryParseError, parse_save_line, read_chunks

# field ids shared with _fastscan.c
F_SRC, F_DST, F_SPORT, F_DPORT, F_STATE, F_PROTO, F_ZONE, F_MARK, F_RSRC, F_RDST, F_L3 = range(11)
KEYS = {
    "src": (F_SRC,), "dst": (F_DST,), "sport": (F_SPORT,), "dport": (F_DPORT,), "pair": (F_SRC, F_DST, F_DPORT),
    "state": (F_STATE,), "proto": (F_PROTO,), "zone": (F_ZONE,), "mark": (F_MARK,),
    "reply-src": (F_RSRC,), "reply-dst": (F_RDST,), "l3": (F_L3,), "netns": (),
}
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
    """Pure-Python twin of ``_fastscan.Aggregator`` (same line rules: ``ctdoctor.scan``)."""

    def __init__(self, fields, states, protos, port, src_nets, dst_nets):
        self.fields = fields
        self.states = set(states) if states is not None else None
        self.protos = set(protos) if protos is not None else None
        self.port = port
        self.port_b = str(port).encode() if port >= 0 else None  # ports are compared as scanned text
        self.src_nets = [_net(n) for n in src_nets] if src_nets else None
        self.dst_nets = [_net(n) for n in dst_nets] if dst_nets else None
        self.acc: dict = {}
        self.matched = self.total = 0

    def feed(self, buf: bytes, skip_first_bad: bool = False):
        """(lines, unreadable lines, first unreadable line or 0), as the C scanner returns."""
        lines = buf.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        first = True
        n = bad = first_bad = 0
        for n, raw in enumerate(lines, 1):
            ln = raw.strip(b" \r")
            if not ln:
                continue
            if ln[:3] in (b"-A ", b"-I "):
                f = _save_fields(ln)
            else:
                f = scan_line(ln)
            if f is None:
                if not (first and skip_first_bad):
                    bad += 1
                    first_bad = first_bad or n
            else:
                self._take(f)
            first = False
        return n, bad, first_bad

    def feed_entries(self, entries) -> int:
        """Decoded entries straight in (the pure-Python ctnetlink path); returns how many."""
        n = 0
        for e in entries:
            self._take(entry_fields(e))
            n += 1
        return n

    def _take(self, f) -> None:
        self.total += 1
        lab = f[S_LABEL]
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
        self.matched += 1
        key = SEP.join(f[_FIELD_SLOT[x]] for x in self.fields)
        k = (key, lab)
        v = self.acc.get(k)
        if v is None:
            self.acc[k] = [1, f[S_OPK], f[S_OB], f[S_RPK], f[S_RB]]
        else:
            v[0] += 1
            v[1] = min(v[1] + f[S_OPK], U64)
            v[2] = min(v[2] + f[S_OB], U64)
            v[3] = min(v[3] + f[S_RPK], U64)
            v[4] = min(v[4] + f[S_RB], U64)

    def result(self):
        return self.acc

    def merge(self, other, prefix: bytes = b"") -> None:
        for (k, lab), v in other.result().items():
            key = (prefix + k, lab)
            cur = self.acc.get(key)
            if cur is None:
                self.acc[key] = list(v)
            else:
                cur[0] += v[0]
                for i in range(1, 5):
                    cur[i] = min(cur[i] + v[i], U64)
        self.matched += other.matched
        self.total += other.total

    def top(self, limit: int):
        """(groups, [(key, count, opk, ob, rpk, rb, {label: count})]) by count, then key bytes."""
        groups: dict[bytes, list] = {}
        for (k, lab), (cnt, opk, ob, rpk, rb) in self.acc.items():
            g = groups.get(k)
            if g is None:
                g = groups[k] = [0, 0, 0, 0, 0, {}]
            g[0] += cnt
            g[1] = min(g[1] + opk, U64)
            g[2] = min(g[2] + ob, U64)
            g[3] = min(g[3] + rpk, U64)
            g[4] = min(g[4] + rb, U64)
            g[5][lab] = g[5].get(lab, 0) + cnt
        order = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
        if limit > 0:
            order = order[:limit]
        return len(groups), [(k, *g) for k, g in order]


# scan tuple slot of each key field
_FIELD_SLOT = {F_SRC: S_SRC, F_DST: S_DST, F_SPORT: S_SPORT, F_DPORT: S_DPORT, F_STATE: S_LABEL,
               F_PROTO: S_PROTO, F_ZONE: S_ZONE, F_MARK: S_MARK, F_RSRC: S_RSRC, F_RDST: S_RDST, F_L3: S_L3}


def _save_fields(ln: bytes):
    """A ``conntrack -o save`` line as scan fields; its mark is unknown (save never prints it): b""."""
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
    return (e.l3.encode(), e.proto.encode(), label(e).encode(), o.src.encode(), o.dst.encode(), num(o.sport),
            num(o.dport), r.src.encode(), r.dst.encode(), num(e.mark), str(zone or 0).encode(), e.unreplied,
            e.assured, cnt(o.packets), cnt(o.bytes), cnt(r.packets), cnt(r.bytes))


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


@dataclass
class Query:
    by: list[str]
    states: list[str] | None = None
    protos: list[str] | None = None
    port: int = -1
    src: list[str] | None = None
    dst: list[str] | None = None

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
        if not force_python and accelerated():
            from ctdoctor._fastscan import Aggregator

            return Aggregator(*self.args())
        return PyAggregator(*self.args())


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
    q = Query(keys)
    if state:
        q.states = [s.strip().upper() for s in state.split(",") if s.strip()]
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


class Aggregator(Protocol):
    """What ``_fastscan.Aggregator`` and ``PyAggregator`` both are."""

    total: int
    matched: int

    def feed(self, buf: bytes, skip_first_bad: bool = False) -> tuple[int, int, int]: ...
    def merge(self, other: Any, prefix: bytes = b"") -> None: ...
    def result(self) -> dict: ...
    def top(self, limit: int) -> tuple[int, list]: ...


# ---- feeding ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one or more listings gave: an aggregator plus line and accounting facts."""

    query: Query
    agg: Aggregator | None = None
    lines: int = 0
    accounting: bool = False
    unreadable: int = 0  # lines that were not an entry (skipped and counted)
    first_bad: tuple[int, str] | None = None  # (line number, text) of the first of them

    @property
    def total(self) -> int:
        return self.agg.total if self.agg is not None else 0

    @property
    def matched(self) -> int:
        return self.agg.matched if self.agg is not None else 0

    def note_bad(self, count: int, line_no: int, text: bytes) -> None:
        self.unreadable += count
        if count and self.first_bad is None:
            self.first_bad = (line_no, text.decode("utf-8", "replace").strip()[:80])

    def check(self) -> Tally:
        """Reject a listing most of whose lines are not entries; a few bad lines are only counted."""
        if self.unreadable and self.unreadable * 2 > self.total + self.unreadable:
            n, text = self.first_bad or (0, "")
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
            self.accounting = other.accounting
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
        self.accounting = self.accounting or other.accounting


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
        if b"(conntrack-tools)" not in chunk and b"nfct_labelmap" not in chunk:
            return chunk
        out = []
        lines = chunk.split(b"\n")
        i = 0
        while i < len(lines):
            ln = lines[i]
            if b"(conntrack-tools)" in ln or b"nfct_labelmap" in ln:
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


def _chunks(f, size=CHUNK):
    for c in read_chunks(f, size):
        yield c if c.endswith(b"\n") else c + b"\n"


def _check_text(chunk: bytes, first_line_no: int) -> None:
    if b"\x00" in chunk:
        n = first_line_no + chunk[: chunk.index(b"\x00")].count(b"\n")
        raise InputError(f"line {n}: binary data, not a conntrack listing")


def tally_stream(f, query: Query, *, skip_first_partial: bool = False, force_python: bool = False) -> Tally:
    """Aggregate a binary stream; a reader thread keeps the next chunk coming while this one is parsed."""
    return tally_stream_multi(f, [query], skip_first_partial=skip_first_partial, force_python=force_python)[0]


def tally_stream_multi(f, queries: list[Query], *, skip_first_partial: bool = False,
                       force_python: bool = False) -> list[Tally]:
    """One read of the stream, several aggregations (the doctor's state mix and top keys)."""
    aggs = [q.aggregator(force_python) for q in queries]
    q: queue.Queue = queue.Queue(maxsize=2)
    err: list = []
    stop = threading.Event()

    def reader():
        try:
            for c in _chunks(f):
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
        except BaseException as e:
            err.append(e)
        q.put(None)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    noise = _Noise()
    line_base = 0
    first = True
    save_format = None
    acct = False
    bad = 0
    first_bad: tuple[int, str] | None = None
    try:
        while True:
            c = q.get()
            if c is None:
                break
            _check_text(c, line_base + 1)
            c = noise.clean(c)
            if save_format is None:
                save_format = c.lstrip()[:3] in (b"-A ", b"-I ")
                if save_format:
                    aggs = [qq.aggregator(force_python=True) for qq in queries]
            if not acct and b"packets=" in c:
                acct = True
            lines = 0
            for i, agg in enumerate(aggs):
                lines, nbad, fb = agg.feed(c, first and skip_first_partial)
                if i == 0 and nbad:
                    bad += nbad
                    if first_bad is None:
                        text = c.split(b"\n")[fb - 1].decode("utf-8", "replace").strip()[:80]
                        first_bad = (line_base + fb, text)
            first = False
            line_base += lines
    finally:
        stop.set()  # the reader sees it within 0.1 s, also when the consumer raised
    t.join()
    if err:
        e = err[0]
        if isinstance(e, InputError):
            raise e
        raise InputError(f"reading the listing failed: {e}")
    return [Tally(qq, agg, line_base, acct, bad, first_bad).check() for qq, agg in zip(queries, aggs, strict=True)]


def _tally_range(path: str, start: int, end: int, query: Query, force_python: bool):
    """Aggregate the lines that start in [start, end) of a file. Returns (tally, binary line or 0, kind)."""
    agg = query.aggregator(force_python)
    tally = Tally(query, None)
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()
        pos = f.tell()
        lines = 0
        acct = False
        while pos < end:
            data = f.read(min(CHUNK, end - pos))
            if not data:
                break
            pos += len(data)
            if not data.endswith(b"\n"):
                data += f.readline()  # finish the line that started inside the range
                pos = f.tell()
            if b"\x00" in data:
                return tally, lines + data[: data.index(b"\x00")].count(b"\n") + 1, RangeEnd.BINARY
            if b"(conntrack-tools)" in data or b"nfct_labelmap" in data:
                return tally, 0, RangeEnd.NOISE
            acct = acct or b"packets=" in data
            n, nbad, fb = agg.feed(data, False)
            if nbad:
                # line numbers are relative to this range until the ranges are joined
                tally.note_bad(nbad, lines + fb, data.split(b"\n")[fb - 1])
            lines += n
    tally.agg, tally.lines, tally.accounting = agg, lines, acct
    return tally, 0, RangeEnd.DONE


class RangeEnd(Enum):
    """How a worker's range of a saved listing ended."""

    DONE = "done"
    BINARY = "binary"  # NUL bytes: not a listing
    NOISE = "noise"  # conntrack-tools stderr merged in: the whole file goes through the noise filter


def tally_file(path: str, query: Query, *, workers: int | None = None, force_python: bool = False) -> Tally:
    """Aggregate a plain file: ranges split at line boundaries, one thread each
    (the C scanner and file reads release the GIL, so they run in parallel)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    workers = workers or min(os.cpu_count() or 1, 8)
    if head.lstrip()[:3] in (b"-A ", b"-I ") or size < (8 << 20) or workers < 2 or \
            force_python or not accelerated():
        with open(path, "rb") as f:
            return tally_stream(f, query, force_python=force_python or head.lstrip()[:3] in (b"-A ", b"-I "))
    bounds = [size * i // workers for i in range(workers + 1)]
    parts: list = [None] * workers

    def work(i):
        parts[i] = _tally_range(path, bounds[i], bounds[i + 1], query, force_python)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Tally(query)
    base = 0
    for tally, bin_line, kind in parts:
        if kind is RangeEnd.NOISE:
            with open(path, "rb") as f:
                return tally_stream(f, query, force_python=force_python)
        if kind is RangeEnd.BINARY:
            raise InputError(f"line {base + bin_line}: binary data, not a conntrack listing")
        if tally.first_bad is not None:
            tally.first_bad = (base + tally.first_bad[0], tally.first_bad[1])
        total.merge(tally)
        base += tally.lines
    return total.check()


# ---- rows ----------------------------------------------------------------------------------


class Row(TypedDict, total=False):
    """One row of ``top``: its key values, count, share of what was read, state mix, packets/bytes."""

    key: dict[str, Any]
    count: int
    share: float
    states: dict[str, int]
    packets: int
    bytes: int
    rate: float  # top --rate only


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
        if "netns" in query.by:  # merged with the netns name in front
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
        elif k == "netns":
            key["netns"] = ns
        elif k in ("sport", "dport", "zone", "mark"):
            key[k] = int(part[0]) if part[0] else None
        else:
            key[k] = part[0]
    return key
