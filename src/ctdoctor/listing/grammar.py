"""The conntrack listing line, read by one set of rules: ``walk`` (``entry.read_line`` makes an
``Entry`` of what it reads; ``scan_line`` gives the scanners' fields).

The kernel prints an entry in ``ct_seq_show`` (net/netfilter/nf_conntrack_standalone.c)::

    "%-8s %u %-8s %u " l3 name, l3num, l4 name, protonum
    "%ld "             timeout (absent when [OFFLOAD]ed)
    "%s "              TCP/SCTP/DCCP state (l4proto->print_conntrack)
    tuple              src= dst= and sport= dport= | type= code= id= | srckey= dstkey=
    zone-orig=, packets= bytes=, [UNREPLIED], reply tuple, zone-reply=,
    packets= bytes=, [HW_OFFLOAD]|[OFFLOAD]|[ASSURED], mark=, secctx=,
    zone=, delta-time=, use=

``conntrack -L`` prints the same without the l3 columns, ``-o extended`` with them; ``-o id``
appends ``id=``. The rules, which ``fastscan/scan.c``'s scanner follows to the byte (a fuzz test
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

Pure: bytes in, values out. ``canonical.py`` reads the lines in the kernel's exact shape faster
(the same rules, as one regex); every other line is read here. Light to import (no dataclasses):
the pure-Python scanner needs it for any listing, the ``Entry`` types only some.
"""

from __future__ import annotations

from typing import Any

from ctdoctor.listing.fields import U64, ScanFields

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



# ---- addresses and numbers ------------------------------------------------------------------

_addr_cache: dict[bytes, bytes | None] = {}


def norm_addr(a: bytes) -> bytes | None:
    """The key form of an address (IPv4 as printed, IPv6 as inet_ntop prints it), or None when
    inet_pton rejects it."""
    r = _addr_cache.get(a, b"")
    if r != b"":
        return r
    import socket  # here, not at import (5 ms of start-up): only lines outside the canonical shape get here

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


def row_label(state: bytes, unreplied: bool, assured: bool, offload: bool = False, hw_offload: bool = False) -> bytes:
    """The label of an entry in a row's state mix: its state, else what its flags say."""
    if state:
        return state
    if hw_offload:
        return b"HW_OFFLOAD"
    if offload:
        return b"OFFLOAD"
    if unreplied:
        return b"UNREPLIED"
    if assured:
        return b"ASSURED"
    return b"REPLIED"


class Walk:
    """What ``walk`` read of a line: the head, the tuples' and the tail's values, and the scan fields."""

    def __init__(self, ln: _Line, l3: bytes, proto: bytes, num: bytes, timeout: int | None, state: bytes,
                 addrs: tuple[bytes, bytes, bytes, bytes], fields: ScanFields):
        self.line, self.l3, self.proto, self.num, self.timeout, self.state = ln, l3, proto, num, timeout, state
        self.addrs, self.fields = addrs, fields


def walk(line: bytes) -> Walk:
    """One listing line (no newline) by the rules; raises EntryParseError when they refuse it."""
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
        l3, num if proto == b"unknown" else proto, row_label(state, fl["unreplied"], fl["assured"], fl["offload"], fl["hw_offload"]), src, dst, ln.sport, ln.dport, rsrc, rdst,
        ln.mark or b"0", ln.zone or ln.zorig or ln.zrep or b"0", fl["unreplied"], fl["assured"],
        ln.cnt[0], ln.cnt[1], ln.cnt[2], ln.cnt[3], ln.acct)
    return Walk(ln, l3, proto, num, timeout, state, (src, dst, rsrc, rdst), fields)


def scan_line(line: bytes) -> ScanFields | None:
    """One listing line (no newline, not blank) -> its scan fields, or None if the rules refuse it."""
    try:
        return walk(line).fields
    except EntryParseError:
        return None
