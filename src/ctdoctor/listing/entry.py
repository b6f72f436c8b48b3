"""The conntrack listing line, read by one set of rules: ``read_line`` (and the ``Entry`` it gives).

The kernel prints an entry in ``ct_seq_show`` (net/netfilter/nf_conntrack_standalone.c)::

    "%-8s %u %-8s %u " l3 name, l3num, l4 name, protonum
    "%ld "             timeout (absent when [OFFLOAD]ed)
    "%s "              TCP/SCTP/DCCP state (l4proto->print_conntrack)
    tuple              src= dst= and sport= dport= | type= code= id= | srckey= dstkey=
    zone-orig=, packets= bytes=, [UNREPLIED], reply tuple, zone-reply=,
    packets= bytes=, [HW_OFFLOAD]|[OFFLOAD]|[ASSURED], mark=, secctx=,
    zone=, delta-time=, use=

``conntrack -L`` prints the same without the l3 columns, ``-o extended`` with them; ``-o id``
appends ``id=``. The rules, which ``_fastscan.c``'s scanner follows to the byte (a fuzz test
holds the two to the reference in ``tests/reference_grammar.py``):

- A line is split at spaces. Head: ``ipv4|ipv6|unknown`` + digits are the l3 columns when the
  next token is a protocol name; the protocol name is alphanumeric (at most 32 characters),
  its number 0-255 in at most 3 digits; then optional digits (the timeout; absent when
  OFFLOADed) and an optional state (``[A-Z0-9_]``, at most 32 characters).
- ``[...]`` is one flag, also when it holds spaces (``-o ktimestamp``'s
  ``[start=Tue Apr  6 10:11:12 2021]``). ``[ASSURED]``, ``[OFFLOAD]``, ``[HW_OFFLOAD]`` end the
  tuples (the tail begins); ``[UNREPLIED]`` and unknown flags (vendor ``[FASTNAT]``) do not.
- Tuples: ``src=`` opens one (a third is an error); ``dst``, ``sport``, ``dport``,
  ``packets``, ``bytes``, ``zone-orig``, ``zone-reply`` (and ICMP's ``type``, ``code``, ``id``,
  GRE's ``srckey``, ``dstkey``) belong to the open tuple. Ports are 0-65535, counters
  0..2^64-1, zones 0-65535, marks 0..2^32-1, all plain decimal.
- Tail: ``mark=``, ``zone=``, ``use=``, ``secctx=``, ``labels=``, ``helper=``,
  ``delta-time=``, ``id=`` (after the tuples). Other ``key=value`` tokens and bare words
  (``slan``) are skipped (kept in ``Entry.extra``): vendor kernels add their own.
- Two tuples with ``src`` and ``dst`` each, and four addresses that ``inet_pton`` accepts
  (IPv6 when there is a ``:``), or the line is not an entry.

Keys: IPv6 addresses as ``inet_ntop`` prints them (RFC 5952), IPv4 as printed (``inet_pton``
admits only the canonical form); numbers without leading zeros; the zone is ``zone=``, else
``zone-orig=``, else ``zone-reply=``, else 0.

Pure: text in, entries out. ``canonical.py`` reads the lines in the kernel's exact shape faster
(the same rules, as one regex); every other line is read here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ctdoctor.errors import InputError
from ctdoctor.listing.fields import U64, ScanFields
from ctdoctor.listing.formats import is_save_line, repair_lines

L3_NAMES = {"ipv4": 2, "ipv6": 10, "unknown": 0}
PROTO_NUMBERS = {
    "icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "icmpv6": 58,
    "sctp": 132, "udplite": 136,
}
PORT_PROTOS = {"tcp", "udp", "udplite", "dccp", "sctp"}
ICMP_PROTOS = {"icmp", "icmpv6"}

_PROTO_MAX = _STATE_MAX = 32
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STATE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_L3 = (b"ipv4", b"ipv6", b"unknown")
_TAIL_FLAGS = {b"[ASSURED]": "assured", b"[OFFLOAD]": "offload", b"[HW_OFFLOAD]": "hw_offload"}
_TAIL_KEYS = {b"use", b"secctx", b"labels", b"helper", b"delta-time"}
_ICMP_KEYS = {b"type": "icmp_type", b"code": "icmp_code", b"id": "icmp_id", b"srckey": "srckey",
              b"dstkey": "dstkey"}
_TAIL_INTS = {b"use": "use", b"id": "id", b"delta-time": "delta_time"}


class EntryParseError(ValueError):
    pass


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


# ---- addresses and numbers ------------------------------------------------------------------

_addr_cache: dict[bytes, bytes | None] = {}


def norm_addr(a: bytes) -> bytes | None:
    """The key form of an address (IPv4 as printed, IPv6 as inet_ntop prints it), or None when
    inet_pton rejects it."""
    r = _addr_cache.get(a, b"")
    if r != b"":
        return r
    out: bytes | None = None
    if b"\x00" not in a:
        v6 = b":" in a
        if len(a) <= (45 if v6 else 15):
            fam = socket.AF_INET6 if v6 else socket.AF_INET
            try:
                packed = socket.inet_pton(fam, a.decode("latin-1"))
                out = socket.inet_ntop(fam, packed).encode() if v6 else a
            except (OSError, ValueError):
                out = None
    if len(_addr_cache) > 100_000:
        _addr_cache.clear()
    _addr_cache[a] = out
    return out


def _number(v: bytes, max_digits: int, limit: int) -> int | None:
    """A plain decimal number within limit, or None."""
    if not v or len(v) > max_digits or not v.isdigit():
        return None
    n = int(v)
    return n if n <= limit else None


def _loose_int(v: bytes) -> int | None:
    """A value the rules do not check (ICMP's type, GRE's keys, use=, id=): decimal or 0x hex."""
    try:
        return int(v, 16) if v[:2] == b"0x" else int(v) if v.isdigit() else None
    except ValueError:
        return None


def _tokens(line: bytes) -> list[bytes]:
    """Space-separated tokens; a ``[`` token runs to the next one that ends with ``]``."""
    raw = [t for t in line.split(b" ") if t]
    if b"[" not in line:
        return raw
    out: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        t = raw[i]
        if t[0] == 0x5B and not (len(t) > 1 and t[-1] == 0x5D):  # "[" without its "]"
            j = i + 1
            while j < n and raw[j][-1] != 0x5D:
                j += 1
            out.append(b" ".join(raw[i:j + 1]))
            i = j + 1
            continue
        out.append(t)
        i += 1
    return out


# ---- the rules -------------------------------------------------------------------------------


class _Line:
    """One line read token by token: the entry's values and the scan fields' text forms."""

    def __init__(self) -> None:
        self.tup = -1
        self.tail = False
        self.addr: list[bytes] = [b"", b"", b"", b""]  # src, dst, reply src, reply dst
        self.sport = self.dport = self.mark = self.zone = self.zorig = self.zrep = b""
        self.flags = {"unreplied": False, "assured": False, "offload": False, "hw_offload": False}
        self.acct = False
        self.cnt = [0, 0, 0, 0]  # opk, ob, rpk, rb
        self.tuples: list[dict[str, int | None]] = [{}, {}]
        self.ints: dict[str, int | None] = {}  # the entry's mark, zone, use, id, delta_time
        self.text: dict[str, str] = {}  # secctx, labels
        self.extra: dict[str, Any] = {}

    def flag(self, t: bytes) -> None:
        if t == b"[UNREPLIED]":
            self.flags["unreplied"] = True
            return
        f = _TAIL_FLAGS.get(t)
        if f is None:
            self.extra.setdefault("flags", []).append(t.decode("utf-8", "replace").strip("[]"))
            return
        self.tail = True
        self.flags[f] = True

    def token(self, t: bytes) -> None:
        """One token after the head; raises EntryParseError where the rules refuse the line."""
        if t[0] == 0x5B:  # "["
            self.flag(t)
            return
        k, eq, v = t.partition(b"=")
        if not eq:
            self.extra.setdefault("words", []).append(t.decode("utf-8", "replace"))
        elif k == b"src":
            self._src(v)
        elif k == b"mark" or k == b"zone":
            self._tail_number(k, v)
        elif k in _TAIL_KEYS or (k == b"id" and self.tail):
            self.tail = True
            self._tail_value(k, v)
        elif self.tail or self.tup < 0:
            self._other(k, v)
        else:
            self._tuple_key(k, v)

    def _src(self, v: bytes) -> None:
        if self.tail:
            self._other(b"src", v)
            return
        if self.tup == 1:
            raise EntryParseError("more than two tuples")
        self.tup += 1
        self.addr[2 * self.tup] = v

    def _tail_number(self, k: bytes, v: bytes) -> None:
        x = _number(v, 10, 0xFFFFFFFF) if k == b"mark" else _number(v, 5, 65535)
        if x is None:
            raise EntryParseError(f"{k.decode()}={v.decode('utf-8', 'replace')!r} is out of range")
        if k == b"mark":
            self.mark = str(x).encode()
        else:
            self.zone = str(x).encode()
        self.ints[k.decode()] = x
        self.tail = True

    def _tail_value(self, k: bytes, v: bytes) -> None:
        if k in _TAIL_INTS:
            x = _loose_int(v)
            if x is None:
                self._other(k, v)
            self.ints[_TAIL_INTS[k]] = x
        elif k == b"secctx" or k == b"labels":
            self.text[k.decode()] = v.decode("utf-8", "replace")
        else:
            self._other(k, v)

    def _other(self, k: bytes, v: bytes) -> None:
        """A key the rules skip: kept as text (the old GRE ``timeout=30,`` without its comma)."""
        ks = k.decode("utf-8", "replace")
        vs = v.decode("utf-8", "replace")
        self.extra[ks] = vs.rstrip(",") if ks in ("timeout", "stream_timeout") else vs

    def _tuple_key(self, k: bytes, v: bytes) -> None:
        cur = self.tuples[self.tup]
        if k == b"dst":
            self.addr[2 * self.tup + 1] = v
        elif k == b"sport" or k == b"dport":
            p = _number(v, 5, 65535)
            if p is None:
                raise EntryParseError(f"{k.decode()}={v.decode('utf-8', 'replace')!r} is not a port")
            cur[k.decode()] = p
            if self.tup == 0:
                if k == b"sport":
                    self.sport = str(p).encode()
                else:
                    self.dport = str(p).encode()
        elif k == b"packets" or k == b"bytes":
            c = _number(v, 20, U64)
            if c is None:
                raise EntryParseError(f"{k.decode()}={v.decode('utf-8', 'replace')!r} is not a counter")
            self.cnt[self.tup * 2 + (k == b"bytes")] = c
            cur[k.decode()] = c
            self.acct = True
        elif k == b"zone-orig" or k == b"zone-reply":
            z = _number(v, 5, 65535)
            if z is None:
                raise EntryParseError(f"{k.decode()}={v.decode('utf-8', 'replace')!r} is not a zone")
            cur["zone"] = z
            if k == b"zone-orig":
                self.zorig = str(z).encode()
            else:
                self.zrep = str(z).encode()
        elif k in _ICMP_KEYS:
            x = _loose_int(v)
            if x is None:
                self._other(k, v)
            cur[_ICMP_KEYS[k]] = x
        else:
            self._other(k, v)


def _head(toks: list[bytes]) -> tuple[bytes, bytes, bytes, int | None, bytes, int]:
    """``[l3 l3num] proto protonum [timeout] [STATE]`` -> (l3, proto, protonum text, timeout,
    state, next index); raises EntryParseError."""
    n = len(toks)
    if n < 4:
        raise EntryParseError("too few fields for a conntrack entry")
    i = 0
    l3 = b""
    t2 = toks[2]
    # "ipv4 2 tcp 6 ..." has the l3 columns; "unknown 2 590 src=..." is the l4 name "unknown"
    if toks[0] in _L3 and toks[1].isdigit() and set(t2) <= _ALNUM and not t2.isdigit():
        l3 = toks[0]
        i = 2
    if i + 1 >= n:
        raise EntryParseError("too few fields for a conntrack entry")
    proto = toks[i]
    if len(proto) > _PROTO_MAX or not set(proto) <= _ALNUM:
        raise EntryParseError(f"expected a protocol name, found {proto.decode('utf-8', 'replace')!r}")
    num = toks[i + 1]
    if _number(num, 3, 255) is None:
        raise EntryParseError(f"expected a protocol number after {proto.decode()!r}")
    i += 2
    timeout = None
    if i < n and toks[i].isdigit():
        timeout = int(toks[i])
        i += 1
    state = b""
    if i < n and len(toks[i]) <= _STATE_MAX and set(toks[i]) <= _STATE_CHARS:
        state = toks[i]
        i += 1
    return l3, proto, num, timeout, state, i


def _label(state: bytes, flags: dict[str, bool]) -> bytes:
    if state:
        return state
    if flags["hw_offload"]:
        return b"HW_OFFLOAD"
    if flags["offload"]:
        return b"OFFLOAD"
    if flags["unreplied"]:
        return b"UNREPLIED"
    if flags["assured"]:
        return b"ASSURED"
    return b"REPLIED"


def read_line(line: bytes) -> tuple[Entry, ScanFields]:
    """One listing line (no newline) -> (the entry, its scan fields: see fields.S_*); raises
    EntryParseError when the rules refuse it."""
    toks = _tokens(line)
    l3, proto, num, timeout, state, i = _head(toks)
    ln = _Line()
    for t in toks[i:]:
        ln.token(t)
    if ln.tup != 1:
        raise EntryParseError("entry does not have an original and a reply tuple")
    if not all(ln.addr):
        raise EntryParseError("tuple without src= or dst=")
    a = [norm_addr(x) for x in ln.addr]
    if None in a:
        bad = ln.addr[a.index(None)].decode("utf-8", "replace")
        raise EntryParseError(f"bad address {bad!r}")
    src, dst, rsrc, rdst = (x or b"" for x in a)
    if not l3:
        l3 = b"ipv6" if b":" in src else b"ipv4"
    fl = ln.flags
    fields: ScanFields = (
        l3, num if proto == b"unknown" else proto, _label(state, fl), src, dst, ln.sport, ln.dport, rsrc, rdst,
        ln.mark or b"0", ln.zone or ln.zorig or ln.zrep or b"0", fl["unreplied"], fl["assured"],
        ln.cnt[0], ln.cnt[1], ln.cnt[2], ln.cnt[3], ln.acct)
    o, r = (Tuple(x.decode(), y.decode(), **t) for x, y, t in ((src, dst, ln.tuples[0]), (rsrc, rdst, ln.tuples[1])))
    e = Entry(l3.decode(), proto.decode(), int(num), timeout, state.decode() or None, o, r, fl["unreplied"],
              fl["assured"], "HW_OFFLOAD" if fl["hw_offload"] else "OFFLOAD" if fl["offload"] else None,
              ln.ints.get("mark"), ln.ints.get("zone"), ln.text.get("secctx"), ln.ints.get("delta_time"),
              ln.ints.get("use"), ln.ints.get("id"), ln.text.get("labels"), ln.extra)
    return e, fields


def scan_line(line: bytes) -> ScanFields | None:
    """One listing line (no newline, not blank) -> its scan fields, or None if the rules refuse it."""
    try:
        return read_line(line)[1]
    except EntryParseError:
        return None


def parse_line(line: str) -> Entry:
    """One entry line of /proc/net/nf_conntrack or conntrack -L [-o extended], by the rules above
    (what the scanners take, and only that); raises EntryParseError."""
    return read_line(line.strip(" \r\n").encode("utf-8", "surrogateescape"))[0]


def label(e: Entry) -> str:
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


def clean_lines(lines: Iterable[str]) -> Iterator[str]:
    for _, ln in numbered_lines(lines):
        yield ln


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
