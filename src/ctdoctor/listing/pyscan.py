"""The pure-Python listing reader: one regex pass per chunk, counting in C, folding distinct tuples.

``aggregate.PyAggregator`` keeps the table; this reads text into it. Per chunk:

1. ``canonical.grammar(...).pattern.findall(chunk)``: one tuple per line, captured by the
   regex engine (C) for every line in the canonical shape (tier 1);
2. ``Counter.update`` of those tuples (C): the lines of a table that agree on every captured
   field (key, state, flags) become one tuple with a count;
3. only the *distinct* tuples become keys and labels (the fold), when the pending counter
   grows large and at the end;
4. a chunk whose marker group is set anywhere has lines outside the shape: those, and only
   those, are read one by one (``canonical.second_tier()``, then ``entry.scan_line``).

Results are exactly those of feeding every line through ``entry.scan_line`` (tests compare).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, Protocol

from ctdoctor.listing import canonical
from ctdoctor.listing.fields import (
    F_DPORT,
    F_DST,
    F_L3,
    F_MARK,
    F_PROTO,
    F_RDST,
    F_RSRC,
    F_SPORT,
    F_SRC,
    F_STATE,
    F_ZONE,
    SEP,
    U64,
    ScanFields,
)
from ctdoctor.listing.formats import is_noise, is_save_line
from ctdoctor.listing.grammar import norm_addr, row_label, scan_line


class PyAggregator(Protocol):
    """What this scanner needs of the table it feeds (``aggregate.PyAggregator``, which owns it:
    a protocol here, so the two modules do not import each other)."""

    fields: tuple[int, ...]
    filter: Any  # aggregate.Filter: port_b, protos, src_nets, dst_nets
    filtered: bool
    counts: dict[bytes, int]
    rows: dict[tuple[bytes, bytes], list[int]]
    _accounting: bool
    noise: bool
    binary_line: int

    def add_totals(self, total: int, matched: int) -> None: ...

    def take(self, f: ScanFields, n: int) -> None: ...

# A fold runs when this many distinct tuples are pending, or twice the table's size if that is
# more: memory stays flat when nearly every line is distinct (packet counters, a port filter),
# and tuples seen again since the last fold are folded again only a few times.
FOLD_AT = 65536

# key field ids -> the canonical fields that carry them
_FIELD_NEEDS: dict[int, tuple[str, ...]] = {
    F_SRC: ("src",), F_DST: ("dst",), F_SPORT: ("sport",), F_DPORT: ("dport",), F_STATE: (), F_PROTO: ("proto",),
    F_ZONE: ("zone",), F_MARK: ("mark",), F_RSRC: ("rsrc",), F_RDST: ("rdst",), F_L3: ("l3", "src")}

# where a fold reads each field, in this order (an absent field reads an always-empty slot)
LAYOUT = ("t1", "state_src", "state", "unrep", "tflag", "acct_o", "acct_r", "l3", "proto", "src", "dst", "sport",
          "dport", "rsrc", "rdst", "zone", "zorig", "zrep", "mark")
# tier-1 flags are one character: see canonical._line
_TFLAG = {b"A": b"ASSURED", b"O": b"OFFLOAD", b"H": b"HW_OFFLOAD", b"": b""}


def needs(agg: PyAggregator) -> frozenset[str]:
    """The canonical fields an aggregator's key and filters read (besides canonical.ALWAYS)."""
    out: set[str] = set()
    for f in agg.fields:
        out.update(_FIELD_NEEDS[f])
    flt = agg.filter
    if flt.port_b is not None:
        out.update(("sport", "dport"))
    if flt.protos is not None:
        out.add("proto")
    if flt.src_nets is not None:
        out.add("src")
    if flt.dst_nets is not None:
        out.add("dst")
    return frozenset(out)


class ChunkScanner:
    """Feeds listing chunks to one or more ``PyAggregator``s with one regex pass per chunk.

    One aggregator counts the ``findall`` tuples as they are; several (the doctor's summaries)
    each count their own projection of them, so no table counts a field it does not read.
    """

    def __init__(self, aggs: Iterable[PyAggregator]):
        self.aggs = list(aggs)
        own = [needs(a) for a in self.aggs]
        self.g = canonical.grammar(frozenset().union(*own), combine=len(self.aggs) == 1)
        at = self.g.at
        self.marker = itemgetter(self.g.marker)
        self.combined = "state_src" in at
        # (aggregator, projection or None, where each LAYOUT field is, pending counts)
        self.tables: list[tuple[PyAggregator, Callable[[Any], Any] | None, tuple[int, ...], Counter[Any]]] = []
        for a, want in zip(self.aggs, own, strict=True):
            if len(self.aggs) == 1:
                ix = tuple(at.get(n, self.g.marker) for n in LAYOUT)  # the marker is empty in tier 1
                self.tables.append((a, None, ix, Counter()))
                continue
            names = [n for n in LAYOUT if n in at and (n in canonical.ALWAYS or n in want or
                                                      (n in ("zorig", "zrep") and "zone" in want))]
            names.append("rest")  # empty in tier 1: where absent fields read
            pick = itemgetter(*[at.get(n, self.g.rest) for n in names])
            self.tables.append((a, pick, tuple(names.index(n) if n in names else len(names) - 1 for n in LAYOUT),
                                Counter()))
        self.fold_at = FOLD_AT

    @property
    def pending(self) -> int:
        return sum(len(t[3]) for t in self.tables)

    def feed(self, buf: Any, skip_first_bad: bool = False) -> tuple[int, int, int]:
        """(lines, unreadable lines, first unreadable line or 0), as the C scanner returns."""
        if not buf:
            return 0, 0, 0
        if buf[-1] != 10:  # the last line has no newline (the end of a file): the pattern needs one
            buf = bytes(buf) + b"\n"
        found = self.g.pattern.findall(buf)
        bad = first_bad = 0
        if any(map(self.marker, found)):
            bad, first_bad = self._slow_lines(found, skip_first_bad)
        else:
            for a in self.aggs:
                a.binary_line = 0
        for _a, pick, _ix, pending in self.tables:
            pending.update(found if pick is None else map(pick, found))
            if len(pending) >= self.fold_at:
                self.fold()
        return len(found), bad, first_bad

    def _slow_lines(self, found: list[Any], skip_first_bad: bool) -> tuple[int, int]:
        """Read the lines outside tier 1 (tier 2, else scan_line); their tuples fold to nothing.
        A line with a NUL byte is binary data (unreadable, and reported as such); an unreadable
        line may be conntrack-tools' stderr (noise: reported too)."""
        rest, marker, t1 = self.g.rest, self.g.marker, self.g.at["t1"]
        bad = first_bad = binary = 0
        noise = False
        first = True
        for i, t in enumerate(found, 1):
            if t[t1]:
                first = False
                continue
            if not t[marker]:
                continue  # a blank line
            line = t[rest].strip(b" \r")
            if not line:
                continue
            if b"\x00" in line:
                f = None
                binary = binary or i
            else:
                f = _slow(line)
            if f is None:
                if not (first and skip_first_bad):
                    bad += 1
                    first_bad = first_bad or i
                noise = noise or is_noise(line)
            else:
                for a in self.aggs:
                    a.take(f, 1)
            first = False
        for a in self.aggs:
            a.binary_line = binary
            a.noise = a.noise or noise
        return bad, first_bad

    def fold(self) -> None:
        """Give the pending distinct tuples, with their counts, to the aggregators."""
        for i, (a, pick, ix, pending) in enumerate(self.tables):
            if pending:
                self.tables[i] = (a, pick, ix, Counter())
                _fold(a, ix, pending, self.combined)
        self.fold_at = max(FOLD_AT, 2 * max(len(t[0].rows) for t in self.tables))


def _addr(a: bytes) -> bytes:
    """A tier-1 address in the key form: IPv4 as printed, full-form IPv6 compressed."""
    return a if b":" not in a else norm_addr(a)  # type: ignore[return-value]  # full form: always valid


def _counters(text: bytes) -> tuple[int, int]:
    """(packets, bytes) of ``packets=N bytes=M `` (the regex checked the shape)."""
    p, b = text.split()
    return int(p[8:]), int(b[6:])


def _label(state: bytes, unrep: bytes, tflag: bytes) -> bytes:
    """The row label of captured text: the state, else what the flags say (tflag as its full name)."""
    return row_label(state, bool(unrep), tflag == b"ASSURED", tflag == b"OFFLOAD", tflag == b"HW_OFFLOAD")


# the label of a stateless tier-1 tuple by (unrep, tflag) characters
_FLAG_LABEL = {(u, f): _label(b"", u, _TFLAG[f]) for u in (b"", b"U") for f in _TFLAG}


class _Labels(dict[tuple[bytes, bytes, bytes], bytes]):
    """(state as captured with its padding, unrep, tflag) -> the row label, computed when first asked."""

    def __missing__(self, k: tuple[bytes, bytes, bytes]) -> bytes:
        state, unrep, tflag = k
        v = self[k] = state.rstrip(b" ") or _FLAG_LABEL[(unrep, tflag)]
        return v


Folder = Callable[[Counter[Any], dict[bytes, int], dict[tuple[bytes, bytes], list[int]]], tuple[int, bool]]
_FOLDERS: dict[tuple[tuple[int, ...], tuple[int, ...], bool], Folder] = {}

# the key's part of each key field (fields.F_*), as Python source over a tuple ``t`` (``src``: the source
# address in the key form, ``lab``: the label); {name} is where that field is in ``t``
_KEY_PART = {F_SRC: "src", F_DST: "_addr(t[{dst}])", F_SPORT: "t[{sport}]", F_DPORT: "t[{dport}]", F_STATE: "lab",
             F_PROTO: "t[{proto}]", F_ZONE: "(t[{zone}] or t[{zorig}] or t[{zrep}] or b'0')",
             F_MARK: "(t[{mark}] or b'0')", F_RSRC: "_addr(t[{rsrc}])", F_RDST: "_addr(t[{rdst}])",
             F_L3: "(t[{l3}] or (b'ipv6' if b':' in src else b'ipv4'))"}


def _folder(fields: tuple[int, ...], ix: tuple[int, ...], combined: bool) -> Folder:
    """The fold of an unfiltered aggregator, written out for its key and tuple layout (like
    namedtuple and dataclasses do): one tuple costs a few dict operations, no calls per field."""
    cached = _FOLDERS.get((fields, ix, combined))
    if cached is not None:
        return cached
    at = dict(zip(LAYOUT, ix, strict=True))
    key = " + SEP + ".join(_KEY_PART[f].format(**at) for f in fields) if fields else "b''"
    # combined: the state as captured (with its padding) and the flags name the label, through a
    # per-fold cache (one lookup instead of a strip and a choice; equal labels share one object)
    head = (f"state, _, src = t[{at['state_src']}].partition(b'src=')\n"
            f"        lab = labels[(state, t[{at['unrep']}], t[{at['tflag']}])]" if combined else
            f"state = t[{at['state']}]\n        src = t[{at['src']}]\n"
            f"        lab = state or _FLAG_LABEL[(t[{at['unrep']}], t[{at['tflag']}])]")
    code = f"""
def fold(pending, counts, rows):
    total = 0
    acct = False
    labels = _Labels()
    for t, n in pending.items():
        if not t[{at['t1']}]:
            continue  # not tier 1 (read already) or a blank line
        {head}
        if b':' in src:
            src = _addr(src)
        key = {key}
        total += n
        counts[key] = counts.get(key, 0) + n
        k = (key, lab)
        v = rows.get(k)
        if v is None:
            v = rows[k] = [n, 0, 0, 0, 0]
        else:
            v[0] += n
        ao, ar = t[{at['acct_o']}], t[{at['acct_r']}]
        if ao or ar:
            acct = True
            _add_counters(v, ao, ar, n)
    return total, acct
"""
    env: dict[str, Any] = {"_addr": _addr, "_FLAG_LABEL": _FLAG_LABEL, "SEP": SEP, "_add_counters": _add_counters,
                           "_Labels": _Labels}
    exec(compile(code, f"<ctdoctor fold {fields}>", "exec"), env)  # our own code, written above
    fn: Folder = env["fold"]
    _FOLDERS[(fields, ix, combined)] = fn
    return fn


def _add_counters(v: list[int], ao: bytes, ar: bytes, n: int) -> None:
    opk, ob = _counters(ao) if ao else (0, 0)
    rpk, rb = _counters(ar) if ar else (0, 0)
    v[1] = min(v[1] + opk * n, U64)
    v[2] = min(v[2] + ob * n, U64)
    v[3] = min(v[3] + rpk * n, U64)
    v[4] = min(v[4] + rb * n, U64)


def _fold(agg: PyAggregator, ix: tuple[int, ...], pending: Counter[Any], combined: bool) -> None:
    """Pending tuples into the aggregator: the unfiltered table directly, else through take()."""
    if not agg.filtered:
        total, acct = _folder(agg.fields, ix, combined)(pending, agg.counts, agg.rows)
        if total:
            agg.add_totals(total, total)
        agg._accounting = agg._accounting or acct
        return
    (i_t1, i_ss, i_state, i_unrep, i_tflag, i_ao, i_ar, i_l3, i_proto, i_src, i_dst, i_sport, i_dport, i_rsrc,
     i_rdst, i_zone, i_zorig, i_zrep, i_mark) = ix
    take = agg.take
    for t, n in pending.items():
        if not t[i_t1]:
            continue
        if combined:
            ss = t[i_ss]
            j = ss.find(b"src=")
            state, src = ss[:j].rstrip(b" "), _addr(ss[j + 4:])
        else:
            state, src = t[i_state], _addr(t[i_src])
        unrep, tflag, ao, ar = t[i_unrep], t[i_tflag], t[i_ao], t[i_ar]
        opk, ob = _counters(ao) if ao else (0, 0)
        rpk, rb = _counters(ar) if ar else (0, 0)
        take((t[i_l3] or (b"ipv6" if b":" in src else b"ipv4"), t[i_proto], state or _FLAG_LABEL[(unrep, tflag)],
              src, _addr(t[i_dst]), t[i_sport], t[i_dport], _addr(t[i_rsrc]), _addr(t[i_rdst]), t[i_mark] or b"0",
              t[i_zone] or t[i_zorig] or t[i_zrep] or b"0", bool(unrep), tflag == b"A", opk, ob, rpk, rb,
              bool(ao or ar)), n)


def _fields(get: Callable[[str], bytes]) -> ScanFields | None:
    """scan.S_* fields of a tier-2 match (``get(name)`` -> group text or b""), or None when an
    address is not one inet_pton takes."""
    src, dst, rsrc, rdst = (norm_addr(get(k)) for k in ("src", "dst", "rsrc", "rdst"))
    if src is None or dst is None or rsrc is None or rdst is None:
        return None
    unrep, tflag = get("unrep"), get("tflag")
    ao, ar = get("acct_o"), get("acct_r")
    opk, ob = _counters(ao) if ao else (0, 0)
    rpk, rb = _counters(ar) if ar else (0, 0)
    return (get("l3") or (b"ipv6" if b":" in src else b"ipv4"), get("proto"), _label(get("state"), unrep, tflag),
            src, dst, get("sport"), get("dport"), rsrc, rdst, get("mark") or b"0",
            get("zone") or get("zorig") or get("zrep") or b"0", bool(unrep), tflag == b"ASSURED", opk, ob, rpk, rb,
            bool(ao or ar))


def _slow(line: bytes) -> ScanFields | None:
    """One line outside tier 1: ``canonical.second_tier()`` (any IPv6 text), else the general rules."""
    pattern, at = canonical.second_tier()
    m = pattern.fullmatch(line + b"\n")
    if m is not None:
        f = _fields(lambda k: m.group(at[k]) or b"" if k in at else b"")
        if f is not None:
            return f
    if is_save_line(line):  # conntrack -o save
        from ctdoctor.listing.entry import save_fields  # Entry's dataclasses: 10 ms of start-up most listings skip

        return save_fields(line)
    return scan_line(line)
