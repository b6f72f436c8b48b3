"""The reference grammar of a conntrack listing line, for tests: a readable, line-by-line twin of
``_fastscan.c``'s ``scan_line``. Production reads lines with ``ctdoctor.listing.entry.read_line``
(and, for lines in the kernel's exact shape, ``canonical.py``'s regex) or the C scanner; the
tests hold all of them to this reference on real and fuzzed lines, valid or not.

A line is split at spaces. It reads::

    [l3 l3num] proto protonum [timeout] [STATE] key=value ... [FLAGS] key=value ...

- Head: ``ipv4|ipv6|unknown`` + digits are the l3 columns (``-o extended``, /proc) when the
  next token is a protocol name; the protocol name is alphanumeric (at most 32 characters),
  its number 1-3 digits; then optional digits (the timeout; absent when OFFLOADed) and an
  optional state (``[A-Z0-9_]``, at most 32 characters).
- ``[...]`` is one flag, also when it holds spaces (``-o ktimestamp``'s
  ``[start=Tue Apr  6 10:11:12 2021]``). ``[ASSURED]``, ``[OFFLOAD]``, ``[HW_OFFLOAD]`` end the
  tuples (the tail begins); ``[UNREPLIED]`` and unknown flags (vendor ``[FASTNAT]``) do not.
- Tuples: ``src=`` opens one (a third is an error); ``dst``, ``sport``, ``dport``,
  ``packets``, ``bytes``, ``zone-orig``, ``zone-reply`` belong to the open tuple (a listing
  whose entries carry ``packets``/``bytes`` has accounting on: their sums are shown). Ports are
  0-65535, counters 0..2^64-1, zones 0-65535, marks 0..2^32-1, all plain decimal.
- Tail: ``mark=``, ``zone=``, ``use=``, ``secctx=``, ``labels=``, ``helper=``,
  ``delta-time=``, ``id=`` (after the tuples). Other ``key=value`` tokens and bare words
  (``slan``) are skipped: vendor kernels add their own.
- Two tuples with ``src`` and ``dst`` each, and four addresses that ``inet_pton`` accepts
  (IPv6 when there is a ``:``), or the line is unreadable.

Keys: IPv6 addresses as ``inet_ntop`` prints them (RFC 5952), IPv4 as printed (``inet_pton``
admits only the canonical form); numbers without leading zeros; the zone is ``zone=``, else
``zone-orig=``, else ``zone-reply=``, else 0.
"""

from __future__ import annotations

import socket

U64 = (1 << 64) - 1
_PROTO_MAX = _STATE_MAX = 32
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STATE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_L3 = (b"ipv4", b"ipv6", b"unknown")
_TAIL_FLAGS = {b"[ASSURED]": "assured", b"[OFFLOAD]": "offload", b"[HW_OFFLOAD]": "hw_offload"}
_TAIL_KEYS = {b"use", b"secctx", b"labels", b"helper", b"delta-time"}

# scan_line's result, a tuple indexed by these (S_ACCT: a tuple had packets= or bytes=)
(S_L3, S_PROTO, S_LABEL, S_SRC, S_DST, S_SPORT, S_DPORT, S_RSRC, S_RDST, S_MARK, S_ZONE, S_UNREPLIED,
 S_ASSURED, S_OPK, S_OB, S_RPK, S_RB, S_ACCT) = range(18)

_addr_cache: dict[bytes, bytes | None] = {}


def _digits(v: bytes) -> bool:
    return bool(v) and v.isdigit()


def _number(v: bytes, max_digits: int, limit: int) -> int | None:
    """A plain decimal number within limit, or None."""
    if not v or len(v) > max_digits or not v.isdigit():
        return None
    n = int(v)
    return n if n <= limit else None


def norm_addr(a: bytes) -> bytes | None:
    """The key form of an address, or None when inet_pton rejects it."""
    r = _addr_cache.get(a, b"")
    if r != b"":
        return r
    out: bytes | None
    if b"\x00" in a:
        out = None
    elif b":" in a:
        if len(a) > 45:
            out = None
        else:
            try:
                out = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, a.decode("latin-1"))
                                       ).encode()
            except (OSError, ValueError):
                out = None
    else:
        if len(a) > 15:
            out = None
        else:
            try:
                socket.inet_pton(socket.AF_INET, a.decode("latin-1"))
                out = a
            except (OSError, ValueError):
                out = None
    if len(_addr_cache) > 100_000:
        _addr_cache.clear()
    _addr_cache[a] = out
    return out


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


def scan_line(line: bytes):  # noqa: C901 - the C scanner's twin, branch for branch, kept readable as one function
    """One listing line (no newline, not blank) -> the fields tuple (see S_*), or None if unreadable."""
    toks = _tokens(line)
    n = len(toks)
    if n < 4:
        return None
    i = 0
    l3 = b""
    t2 = toks[2]
    if toks[0] in _L3 and _digits(toks[1]) and set(t2) <= _ALNUM and not t2.isdigit():
        l3 = toks[0]
        i = 2
    if i + 1 >= n:
        return None
    proto = toks[i]
    if len(proto) > _PROTO_MAX or not set(proto) <= _ALNUM:
        return None
    if _number(toks[i + 1], 3, 255) is None:
        return None
    if proto == b"unknown":  # a protocol the kernel has no name for: keyed by its number
        proto = toks[i + 1]
    i += 2
    if i < n and _digits(toks[i]):
        i += 1
    state = b""
    if i < n and len(toks[i]) <= _STATE_MAX and set(toks[i]) <= _STATE_CHARS:
        state = toks[i]
        i += 1
    tup = -1
    tail = False
    src = dst = rsrc = rdst = b""
    sport = dport = mark = zone = zorig = zrep = b""
    unreplied = assured = offload = hw = acct = False
    cnt = [0, 0, 0, 0]  # opk, ob, rpk, rb
    for t in toks[i:]:
        if t[0] == 0x5B:  # "["
            if t == b"[UNREPLIED]":
                unreplied = True
            else:
                f = _TAIL_FLAGS.get(t)
                if f is not None:
                    tail = True
                    if f == "assured":
                        assured = True
                    elif f == "offload":
                        offload = True
                    else:
                        hw = True
            continue
        k, eq, v = t.partition(b"=")
        if not eq:
            continue  # a bare word: vendor output
        if k == b"src":
            if tail:
                continue
            if tup == 1:
                return None
            tup += 1
            if tup == 0:
                src = v
            else:
                rsrc = v
        elif k == b"mark" or k == b"zone":
            x = _number(v, 10, 0xFFFFFFFF) if k == b"mark" else _number(v, 5, 65535)
            if x is None:
                return None
            if k == b"mark":
                mark = str(x).encode()
            else:
                zone = str(x).encode()
            tail = True
        elif k in _TAIL_KEYS:
            tail = True
        elif tail or tup < 0:
            continue
        elif k == b"dst":
            if tup == 0:
                dst = v
            else:
                rdst = v
        elif k == b"sport" or k == b"dport":
            p = _number(v, 5, 65535)
            if p is None:
                return None
            if tup == 0:
                if k == b"sport":
                    sport = str(p).encode()
                else:
                    dport = str(p).encode()
        elif k == b"packets" or k == b"bytes":
            c = _number(v, 20, U64)
            if c is None:
                return None
            cnt[tup * 2 + (k == b"bytes")] = c
            acct = True
        elif k == b"zone-orig" or k == b"zone-reply":
            z = _number(v, 5, 65535)
            if z is None:
                return None
            if k == b"zone-orig":
                zorig = str(z).encode()
            else:
                zrep = str(z).encode()
    if tup != 1 or not (src and dst and rsrc and rdst):
        return None
    a, b, c2, d = norm_addr(src), norm_addr(dst), norm_addr(rsrc), norm_addr(rdst)
    if a is None or b is None or c2 is None or d is None:
        return None
    if state:
        lab = state
    elif hw:
        lab = b"HW_OFFLOAD"
    elif offload:
        lab = b"OFFLOAD"
    elif unreplied:
        lab = b"UNREPLIED"
    elif assured:
        lab = b"ASSURED"
    else:
        lab = b"REPLIED"
    if not l3:
        l3 = b"ipv6" if b":" in a else b"ipv4"
    return (l3, proto, lab, a, b, sport, dport, c2, d, mark or b"0", zone or zorig or zrep or b"0",
            unreplied, assured, cnt[0], cnt[1], cnt[2], cnt[3], acct)
