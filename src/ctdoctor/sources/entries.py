"""Conntrack entry listings: ``/proc/net/nf_conntrack`` and ``conntrack -L``.

One line is one entry. The kernel prints it in ``ct_seq_show``
(net/netfilter/nf_conntrack_standalone.c)::

    "%-8s %u %-8s %u " l3 name, l3num, l4 name, protonum
    "%ld "             timeout (absent when [OFFLOAD]ed)
    "%s "              TCP/SCTP/DCCP state (l4proto->print_conntrack)
    tuple              src= dst= and sport= dport= | type= code= id= | srckey= dstkey=
    zone-orig=, packets= bytes=, [UNREPLIED], reply tuple, zone-reply=,
    packets= bytes=, [HW_OFFLOAD]|[OFFLOAD]|[ASSURED], mark=, secctx=,
    zone=, delta-time=, use=

``conntrack -L`` prints the same without the l3 columns, ``-o extended``
with them; ``-o id`` appends ``id=``. IPv6 addresses in /proc are in full
form; they are normalised to RFC 5952 here so both sources compare equal.

Lines are parsed by their ``key=value`` tokens, never by column position.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from ctdoctor.errors import InputError

L3_NAMES = {"ipv4": 2, "ipv6": 10, "unknown": 0}
PROTO_NUMBERS = {
    "icmp": 1, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "icmpv6": 58,
    "sctp": 132, "udplite": 136,
}
PORT_PROTOS = {"tcp", "udp", "udplite", "dccp", "sctp"}
ICMP_PROTOS = {"icmp", "icmpv6"}
TUPLE_KEYS = {"dst", "sport", "dport", "type", "code", "id", "srckey", "dstkey", "packets", "bytes",
              "zone-orig", "zone-reply"}
TAIL_KEYS = {"mark", "use", "secctx", "zone", "delta-time", "helper", "labels", "timeout", "stream_timeout"}

# stderr that conntrack-tools and sysctl write, merged into sosreport captures.
NOISE_RE = re.compile(
    r"conntrack v[\d.]+ \(conntrack-tools\): \d+ (?:flow|expectation) entries have been shown\.|"
    r"nfct_labelmap_new: [^\n]*$"
)


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
    extra: dict = field(default_factory=dict)


def norm_addr(a: str) -> str:
    """IPv4 unchanged; IPv6 compressed exactly as ``conntrack`` prints it (inet_ntop: RFC 5952,
    with the IPv4-mapped/compatible forms in dotted notation)."""
    if ":" not in a:
        return a
    return _norm_v6(a)


@functools.lru_cache(maxsize=1 << 16)  # a table repeats few addresses many times
def _norm_v6(a: str) -> str:
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, a))
    except (OSError, ValueError):
        raise EntryParseError(f"bad IPv6 address {a!r}") from None


def _int(key: str, v: str) -> int:
    try:
        return int(v, 0) if v.startswith("0x") else int(v)
    except ValueError:
        raise EntryParseError(f"{key}={v!r} is not a number") from None


def parse_line(line: str) -> Entry:
    """Parse one entry line of /proc/net/nf_conntrack or conntrack -L [-o extended].

    Lenient like ``scan.scan_line``: a ``[...]`` flag may hold spaces (``-o ktimestamp``) and
    bare words that vendor kernels add are skipped."""
    toks = _tokens(line)
    l3, proto, protonum, timeout, state, i = _head(toks)
    body = _Body()
    for tok in toks[i:]:
        body.take(tok)
    if len(body.tuples) != 2:
        raise EntryParseError("entry does not have an original and a reply tuple")
    orig, reply = (_mk_tuple(t) for t in body.tuples)
    if not l3:
        l3 = "ipv6" if ":" in orig.src else "ipv4"
    e = Entry(l3, proto, protonum, timeout, state, orig, reply, body.unreplied, body.assured, body.offload)
    _set_tail(e, body.tail_kw, body.extra)
    if body.extra:
        e.extra = body.extra
    return e


def _head(toks: list[str]) -> tuple[str, str, int, int | None, str | None, int]:
    """``[l3 l3num] proto protonum [timeout] [STATE]`` -> (l3, proto, protonum, timeout, state, next index)."""
    n = len(toks)
    if n < 4:
        raise EntryParseError("too few fields for a conntrack entry")
    i = 0
    l3 = ""
    # "ipv4 2 tcp 6 ..." has the l3 columns; "unknown 2 590 src=..." is the l4 name "unknown".
    if toks[0] in L3_NAMES and toks[1].isdigit() and toks[2].isalnum() and not toks[2].isdigit():
        l3 = toks[0]
        i = 2
    proto = toks[i]
    if "=" in proto or proto.startswith("[") or not proto.isalnum():
        raise EntryParseError(f"expected a protocol name, found {proto!r}")
    if i + 1 >= n or not toks[i + 1].isdigit():
        raise EntryParseError(f"expected a protocol number after {proto!r}")
    protonum = int(toks[i + 1])
    i += 2
    timeout = None
    if i < n and toks[i].isdigit():
        timeout = int(toks[i])
        i += 1
    state = None
    if i < n and "=" not in toks[i] and not toks[i].startswith("["):
        state = toks[i]
        i += 1
    return l3, proto, protonum, timeout, state, i


_FLAG_OFFLOAD = {"[OFFLOAD]": "OFFLOAD", "[HW_OFFLOAD]": "HW_OFFLOAD"}


class _Body:
    """The tuples, flags and tail of an entry line, token by token."""

    def __init__(self):
        self.tuples: list[dict] = []
        self.cur: dict | None = None
        self.tail = False
        self.tail_kw: dict[str, str] = {}
        self.extra: dict = {}
        self.unreplied = self.assured = False
        self.offload: str | None = None

    def take(self, tok: str) -> None:
        if tok[0] == "[":
            self._flag(tok)
            return
        k, eq, v = tok.partition("=")
        if not eq:
            self.extra.setdefault("words", []).append(tok)
        elif k in ("timeout", "stream_timeout") and not self.tuples:  # old GRE print_conntrack
            self.extra[k] = v.rstrip(",")
        elif k == "src" and not self.tail:
            if len(self.tuples) == 2:
                raise EntryParseError("more than two tuples")
            self.cur = {"src": v}
            self.tuples.append(self.cur)
        elif not self.tail and self.cur is not None and k in TUPLE_KEYS:
            self.cur[k] = v
        elif k in TAIL_KEYS or self.tail or k == "id":
            self.tail = True
            self.tail_kw[k] = v
        else:
            self.extra[k] = v

    def _flag(self, tok: str) -> None:
        if tok == "[UNREPLIED]":  # between the tuples: does not end them
            self.unreplied = True
            return
        self.tail = True
        if tok == "[ASSURED]":
            self.assured = True
        elif tok in _FLAG_OFFLOAD:
            self.offload = _FLAG_OFFLOAD[tok]
        else:
            self.extra.setdefault("flags", []).append(tok.strip("[]"))


_TAIL_INTS = {"mark": "mark", "zone": "zone", "use": "use", "id": "id", "delta-time": "delta_time"}


def _set_tail(e: Entry, kw: dict[str, str], extra: dict) -> None:
    for k, v in kw.items():
        if k in _TAIL_INTS:
            setattr(e, _TAIL_INTS[k], _int(k, v))
        elif k == "secctx":
            e.secctx = v
        elif k == "labels":
            e.labels = v
        else:
            extra[k] = v


def _tokens(line: str) -> list[str]:
    """Whitespace-separated tokens; a ``[`` token runs to the next one that ends with ``]``."""
    raw = line.split()
    if "[" not in line:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        t = raw[i]
        if t[0] == "[" and not (len(t) > 1 and t[-1] == "]"):
            j = i + 1
            while j < n and raw[j][-1] != "]":
                j += 1
            out.append(" ".join(raw[i:j + 1]))
            i = j + 1
            continue
        out.append(t)
        i += 1
    return out


def _mk_tuple(t: dict) -> Tuple:
    if "dst" not in t:
        raise EntryParseError("tuple without dst=")
    tu = Tuple(norm_addr(t["src"]), norm_addr(t["dst"]))
    for k, v in t.items():
        if k in ("src", "dst"):
            continue
        attr = {"type": "icmp_type", "code": "icmp_code", "id": "icmp_id",
                "zone-orig": "zone", "zone-reply": "zone"}.get(k, k)
        setattr(tu, attr, _int(k, v))
    return tu


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


def parse_save_line(line: str) -> Entry:
    """Parse a ``conntrack -L -o save`` line (``-A -t 29 -u SEEN_REPLY,ASSURED -s ...``)."""
    toks = line.split()
    if not toks or toks[0] not in ("-A", "-I"):
        raise EntryParseError("not a conntrack -o save line")
    vals: dict = {"orig": {}, "reply": {}}
    top: dict = {}
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
            vals[d][k] = norm_addr(arg.strip("[]"))
        elif opt in _SAVE_INT:
            d, k = _SAVE_INT[opt]
            vals[d][k] = _int(opt, arg)
        elif opt in ("-t", "--timeout"):
            top["timeout"] = _int(opt, arg)
        elif opt in ("-u", "--status"):
            top["status"] = set(arg.split(","))
        elif opt in ("-p", "--proto"):
            top["proto"] = arg
        elif opt == "--state":
            top["state"] = arg
        elif opt in ("-m", "--mark"):
            top["mark"] = _int(opt, arg)
        elif opt in ("-w", "--zone"):
            top["zone"] = _int(opt, arg)
        elif opt in ("-l", "--label"):
            top["labels"] = arg
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


# ---- rendering (the inverse of parse_line; used by tests, anonymize and lab) --


def _full_v6(a: str) -> str:
    import ipaddress

    return ipaddress.IPv6Address(a).exploded if ":" in a else a


def _fmt_tuple(e: Entry, t: Tuple, proc: bool) -> str:
    addr = _full_v6 if proc else (lambda a: a)
    s = f"src={addr(t.src)} dst={addr(t.dst)} "
    if e.proto in PORT_PROTOS:
        s += f"sport={t.sport} dport={t.dport} "
    elif e.proto in ICMP_PROTOS:
        s += f"type={t.icmp_type} code={t.icmp_code} id={t.icmp_id} "
    elif e.proto == "gre":
        s += f"srckey=0x{t.srckey:x} dstkey=0x{t.dstkey:x} "
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
    s += _fmt_tuple(e, e.orig, proc)
    if e.orig.zone is not None:
        s += f"zone-orig={e.orig.zone} "
    if e.orig.packets is not None:
        s += f"packets={e.orig.packets} bytes={e.orig.bytes} "
    if e.unreplied:
        s += "[UNREPLIED] "
    s += _fmt_tuple(e, e.reply, proc)
    if e.reply.zone is not None:
        s += f"zone-reply={e.reply.zone} "
    if e.reply.packets is not None:
        s += f"packets={e.reply.packets} bytes={e.reply.bytes} "
    if e.offload:
        s += f"[{e.offload}] "
    elif e.assured:
        s += "[ASSURED] "
    if e.mark is not None:
        s += f"mark={e.mark} "
    if e.secctx is not None:
        s += f"secctx={e.secctx} "
    if e.zone is not None:
        s += f"zone={e.zone} "
    if e.delta_time is not None:
        s += f"delta-time={e.delta_time} "
    s += f"use={e.use if e.use is not None else 1}"
    if e.id is not None and not proc:
        s += f" id={e.id}"
    return s


# ---- streaming ----------------------------------------------------------------


def open_listing(path: str) -> IO[bytes]:
    """Open a saved listing (plain or gzip, ``-`` for stdin) for streaming."""
    import sys

    if path == "-":
        f = sys.stdin.buffer
    else:
        try:
            f = open(path, "rb")  # noqa: SIM115 - the caller's stream (open_listing returns it)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory, not a listing") from None
    head = f.peek(2)[:2] if hasattr(f, "peek") else b""
    if head == b"\x1f\x8b":
        import gzip

        return gzip.open(f, "rb")  # type: ignore[return-value]
    return f


def read_chunks(f: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Chunks of whole lines from a binary stream (the last may lack its newline)."""
    rest = b""
    while True:
        try:
            data = f.read(size)
        except (OSError, EOFError) as e:
            raise InputError(f"listing is truncated or corrupt ({e})") from None
        if not data:
            break
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            if len(rest) > 64 << 20:
                raise InputError("listing has a line longer than 64 MiB: not a conntrack listing")
            continue
        yield data[:cut]
        rest = data[cut:]
    if rest:
        yield rest


def iter_lines(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[str]:
    """Decoded lines from a binary stream, read in chunks (memory stays flat)."""
    for data in read_chunks(f, chunk):
        lines = data.split(b"\n")  # on \n only: line numbers are the file's
        if lines[-1] == b"":
            lines.pop()
        for ln in lines:
            yield ln.decode("utf-8", "replace")


def numbered_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number in the file, line): blank lines dropped, entries that merged
    stderr split in two (sosreport) rejoined."""
    carry = ""
    for n, raw in enumerate(lines, 1):
        if "(conntrack-tools)" in raw or "nfct_labelmap_new" in raw:
            cleaned = NOISE_RE.sub("", raw)
            if cleaned.strip():
                # The noise sat in the middle of an entry: the rest of it is on the next line.
                carry = cleaned
            continue
        ln = carry + raw if carry else raw
        carry = ""
        if ln.strip():
            yield n, ln
    if carry.strip():
        yield n, carry


def clean_lines(lines: Iterable[str]) -> Iterator[str]:
    for _, ln in numbered_lines(lines):
        yield ln


def iter_entries(lines: Iterable[str], *, skip_first_partial: bool = False) -> Iterator[Entry]:
    """Entries from listing lines; a bad line raises InputError naming its number."""
    first = True
    for n, ln in numbered_lines(lines):
        if ln.startswith(("-A ", "-I ")):
            parse = parse_save_line
        else:
            parse = parse_line
        try:
            e = parse(ln)
        except EntryParseError as err:
            if first and skip_first_partial:
                first = False
                continue
            raise InputError(f"line {n}: not a conntrack entry ({err}): {ln[:80]!r}") from None
        first = False
        yield e
