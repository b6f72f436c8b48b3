"""A conntrack entry as values (``Entry``): read from a listing line by the one grammar
(``grammar.walk``), from a ``conntrack -o save`` line, or decoded from ctnetlink; printed back
as the kernel and conntrack print it; and as the scanners' fields (``entry_fields``).

``conntrack -L`` prints the kernel's line without the l3 columns, ``-o extended`` with them;
``-o id`` appends ``id=``. IPv6 addresses in /proc are in full form; they are normalised to
RFC 5952 so both sources compare equal.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ctdoctor.errors import InputError
from ctdoctor.listing.fields import U64, ScanFields
from ctdoctor.listing.formats import is_save_line, repair_lines
from ctdoctor.listing.grammar import EntryParseError as EntryParseError  # what parse_line raises
from ctdoctor.listing.grammar import norm_addr, row_label, walk

L3_NAMES = {"ipv4": 2, "ipv6": 10, "unknown": 0}
PROTO_NUMBERS = {
    "icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "icmpv6": 58,
    "sctp": 132, "udplite": 136,
}
PORT_PROTOS = {"tcp", "udp", "udplite", "dccp", "sctp"}
ICMP_PROTOS = {"icmp", "icmpv6"}


@dataclass(slots=True)
class Tuple:
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    srckey: int | None = None
    dstkey: int | None = None
    packets: int | None = None
    bytes: int | None = None
    zone: int | None = None  # zone-orig= / zone-reply=


@dataclass(slots=True)
class Entry:
    l3: str
    proto: str
    protonum: int
    timeout: int | None
    state: str | None
    orig: Tuple
    reply: Tuple
    unreplied: bool = False
    assured: bool = False
    offload: str | None = None  # "OFFLOAD" or "HW_OFFLOAD"
    mark: int | None = None
    zone: int | None = None
    secctx: str | None = None
    delta_time: int | None = None
    use: int | None = None
    id: int | None = None
    labels: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_line(line: bytes) -> tuple[Entry, ScanFields]:
    """One listing line (no newline) -> (the entry, its scan fields: see fields.S_*); raises
    EntryParseError when the rules (``grammar``) refuse it."""
    w = walk(line)
    ln, fl = w.line, w.line.flags
    src, dst, rsrc, rdst = (x.decode() for x in w.addrs)
    o, r = Tuple(src, dst, **ln.tuples[0]), Tuple(rsrc, rdst, **ln.tuples[1])
    e = Entry(w.l3.decode(), w.proto.decode(), int(w.num), w.timeout, w.state.decode() or None, o, r,
              fl["unreplied"], fl["assured"], "HW_OFFLOAD" if fl["hw_offload"] else "OFFLOAD" if fl["offload"] else None,
              ln.ints.get("mark"), ln.ints.get("zone"), ln.text.get("secctx"), ln.ints.get("delta_time"),
              ln.ints.get("use"), ln.ints.get("id"), ln.text.get("labels"), ln.extra)
    return e, w.fields


def parse_line(line: str) -> Entry:
    """One entry line of /proc/net/nf_conntrack or conntrack -L [-o extended], by the rules above
    (what the scanners take, and only that); raises EntryParseError."""
    return read_line(line.strip(" \r\n").encode("utf-8", "surrogateescape"))[0]


def label(e: Entry) -> str:
    """The state shown in a row's mix: the protocol state, else what the flags say."""
    return row_label((e.state or "").encode(), e.unreplied, e.assured, e.offload == "OFFLOAD",
                     e.offload == "HW_OFFLOAD").decode()


def entry_fields(e: Entry, counters: bool = True) -> ScanFields:
    """An ``Entry`` (a decoded ctnetlink message, a save line) as the scan fields tuple: what the
    aggregator takes, without printing the entry and scanning it again."""
    o, r = e.orig, e.reply

    def num(v: int | None) -> bytes:
        return b"" if v is None else str(v).encode()

    def cnt(v: int | None) -> int:
        return min(v, U64) if counters and v is not None else 0

    zone = e.zone if e.zone is not None else o.zone if o.zone is not None else r.zone
    acct = counters and any(v is not None for v in (o.packets, o.bytes, r.packets, r.bytes))
    return (e.l3.encode(), e.proto.encode(), label(e).encode(), o.src.encode(), o.dst.encode(), num(o.sport),
            num(o.dport), r.src.encode(), r.dst.encode(), num(e.mark), str(zone or 0).encode(), e.unreplied,
            e.assured, cnt(o.packets), cnt(o.bytes), cnt(r.packets), cnt(r.bytes), acct)


# ---- -o save ----------------------------------------------------------------

# -g (--dst-nat) and -n (--src-nat) stand in for -r / -q on a NATed flow: the DNAT target is the
# reply's source, the SNAT address the reply's destination (captured: tests/data/conntrack_L_save_nat_6.18).
_SAVE_ADDR = {"-s": ("orig", "src"), "-d": ("orig", "dst"), "-r": ("reply", "src"), "-q": ("reply", "dst"),
              "-g": ("reply", "src"), "-n": ("reply", "dst")}
_SAVE_INT = {
    "--sport": ("orig", "sport"), "--dport": ("orig", "dport"),
    "--reply-port-src": ("reply", "sport"), "--reply-port-dst": ("reply", "dport"),
    "--icmp-type": ("orig", "icmp_type"), "--icmp-code": ("orig", "icmp_code"), "--icmp-id": ("orig", "icmp_id"),
    "--icmpv6-type": ("orig", "icmp_type"), "--icmpv6-code": ("orig", "icmp_code"),
    "--icmpv6-id": ("orig", "icmp_id"),
    "--orig-zone": ("orig", "zone"), "--reply-zone": ("reply", "zone"),
}
_SAVE_TOP = {"-t": "timeout", "--timeout": "timeout", "-u": "status", "--status": "status", "-p": "proto",
             "--proto": "proto", "--state": "state", "-m": "mark", "--mark": "mark", "-w": "zone", "--zone": "zone",
             "-l": "labels", "--label": "labels"}


def _v6_text(a: str) -> str:
    """IPv4 unchanged; IPv6 compressed exactly as ``conntrack`` prints it (RFC 5952)."""
    if ":" not in a:
        return a
    n = norm_addr(a.encode("utf-8", "surrogateescape"))
    if n is None:
        raise EntryParseError(f"bad IPv6 address {a!r}")
    return n.decode()


def _int(key: str, v: str) -> int:
    try:
        return int(v, 0) if v.startswith("0x") else int(v)
    except ValueError:
        raise EntryParseError(f"{key}={v!r} is not a number") from None


def _save_options(toks: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    vals: dict[str, dict[str, Any]] = {"orig": {}, "reply": {}}
    top: dict[str, Any] = {}
    it = iter(toks[1:])
    for opt in it:
        try:
            arg = next(it)
        except StopIteration:
            raise EntryParseError(f"option {opt} without a value") from None
        if opt in _SAVE_ADDR:
            d, k = _SAVE_ADDR[opt]
            if opt in ("-g", "-n") and ":" in arg and "." in arg:
                arg = arg.rsplit(":", 1)[0]  # ADDR:PORT of an IPv4 NAT with a port
            vals[d][k] = _v6_text(arg.strip("[]"))
        elif opt in _SAVE_INT:
            d, k = _SAVE_INT[opt]
            vals[d][k] = _int(opt, arg)
        elif opt in _SAVE_TOP:
            k = _SAVE_TOP[opt]
            top[k] = (_int(opt, arg) if k in ("timeout", "mark", "zone") else
                      set(arg.split(",")) if k == "status" else arg)
    return vals, top


def parse_save_line(line: str) -> Entry:
    """Parse a ``conntrack -L -o save`` line (``-A -t 29 -u SEEN_REPLY,ASSURED -s ...``)."""
    toks = line.split()
    if not toks or toks[0] not in ("-A", "-I"):
        raise EntryParseError("not a conntrack -o save line")
    vals, top = _save_options(toks)
    if "src" not in vals["orig"] or "proto" not in top:
        raise EntryParseError("save line without -s or -p")
    proto = top["proto"]
    status = top.get("status", set())
    o, r = vals["orig"], vals["reply"]
    r.setdefault("src", o.get("dst"))
    r.setdefault("dst", o["src"])
    if proto in ICMP_PROTOS:  # the reply of an echo request is an echo reply
        for k in ("icmp_id", "icmp_code"):
            if k in o:
                r.setdefault(k, o[k])
        if "icmp_type" in o:
            r.setdefault("icmp_type", {8: 0, 128: 129, 13: 14, 15: 16, 17: 18}.get(o["icmp_type"], o["icmp_type"]))
    orig = Tuple(**o)
    reply = Tuple(**r)
    return Entry(
        l3="ipv6" if ":" in orig.src else "ipv4",
        proto=proto, protonum=PROTO_NUMBERS.get(proto, 0),
        timeout=top.get("timeout"), state=top.get("state"),
        orig=orig, reply=reply,
        unreplied="SEEN_REPLY" not in status,
        assured="ASSURED" in status,
        offload="OFFLOAD" if "OFFLOAD" in status else None,
        mark=top.get("mark"),  # -o save never prints the mark: unknown, not 0
        zone=top.get("zone"), labels=top.get("labels"),
    )


def save_fields(ln: bytes) -> ScanFields | None:
    """A ``conntrack -o save`` line as scan fields; its mark is unknown (save never prints it): b""."""
    try:
        e = parse_save_line(ln.decode("utf-8", "replace"))
    except EntryParseError:
        return None
    return entry_fields(e, counters=False)


# ---- rendering (the inverse of parse_line; used by tests, anonymize and lab) --


def _full_v6(a: str) -> str:
    return ipaddress.IPv6Address(a).exploded if ":" in a else a


def _fmt_tuple(e: Entry, t: Tuple, proc: bool) -> str:
    s = f"src={_full_v6(t.src) if proc else t.src} dst={_full_v6(t.dst) if proc else t.dst} "
    if e.proto in PORT_PROTOS:
        s += f"sport={t.sport} dport={t.dport} "
    elif e.proto in ICMP_PROTOS:
        s += f"type={t.icmp_type} code={t.icmp_code} id={t.icmp_id} "
    elif e.proto == "gre":
        s += f"srckey=0x{t.srckey or 0:x} dstkey=0x{t.dstkey or 0:x} "
    return s


def _fmt_counters(t: Tuple, zone_word: str) -> str:
    s = f"{zone_word}={t.zone} " if t.zone is not None else ""
    if t.packets is not None:
        s += f"packets={t.packets} bytes={t.bytes} "
    return s


def format_entry(e: Entry, style: str = "proc") -> str:
    """Render an entry as /proc/net/nf_conntrack (``proc``) or ``conntrack -L`` (``default``/``extended``)."""
    proc = style == "proc"
    if proc or style == "extended":
        s = f"{e.l3:<8} {L3_NAMES[e.l3]} {e.proto:<8} {e.protonum} "
    else:
        s = f"{e.proto:<8} {e.protonum} "
    if e.timeout is not None:
        s += f"{e.timeout} "
    if e.state:
        s += f"{e.state} "
    s += _fmt_tuple(e, e.orig, proc) + _fmt_counters(e.orig, "zone-orig")
    if e.unreplied:
        s += "[UNREPLIED] "
    s += _fmt_tuple(e, e.reply, proc) + _fmt_counters(e.reply, "zone-reply")
    if e.offload:
        s += f"[{e.offload}] "
    elif e.assured:
        s += "[ASSURED] "
    for word, v in (("mark", e.mark), ("secctx", e.secctx), ("zone", e.zone), ("delta-time", e.delta_time)):
        if v is not None:
            s += f"{word}={v} "
    s += f"use={e.use if e.use is not None else 1}"
    if e.id is not None and not proc:
        s += f" id={e.id}"
    return s


# ---- listings as lines --------------------------------------------------------


def numbered_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number in the file, line): blank lines dropped, entries that merged
    stderr split in two (sosreport) rejoined."""
    for n, ln in repair_lines(lines):
        if ln.strip():
            yield n, ln


def iter_entries(lines: Iterable[str], *, skip_first_partial: bool = False) -> Iterator[Entry]:
    """Entries from listing lines; a bad line raises InputError naming its number."""
    first = True
    for n, ln in numbered_lines(lines):
        try:
            e = parse_save_line(ln) if is_save_line(ln.encode()) else parse_line(ln)
        except EntryParseError as err:
            if first and skip_first_partial:
                first = False
                continue
            raise InputError(f"line {n}: not a conntrack entry ({err}): {ln[:80]!r}") from None
        first = False
        yield e
