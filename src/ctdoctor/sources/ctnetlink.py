"""Our own ctnetlink dump decoder, for kernels without /proc/net/nf_conntrack.

pyroute2's ``dump_entries`` builds a rich object per entry (about 4.4 k
entries/s here), far too slow for a full table; this module sends one
``IPCTNL_MSG_CT_GET`` dump request and decodes the replies with
``struct.unpack_from`` straight into ``entries.Entry``. For ``top`` and the
doctor, ``DumpSource`` hands the raw receive buffers to the aggregators, which
the C scanner decodes itself (``netlink_feed``): no text in between.
Attribute numbers are those of linux/netfilter/nfnetlink_conntrack.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator

from ctdoctor.errors import Failure
from ctdoctor.listing import accel
from ctdoctor.listing.entry import Entry, Tuple
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.netns import NetnsRef

try:
    from ctdoctor.listing import _fastscan as fastscan
except ImportError:  # built without a compiler: the pure-Python twins here serve
    fastscan = None  # type: ignore[assignment]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_TIMEOUT, CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_USE, CTA_ID = 7, 8, 9, 10, 11, 12
CTA_ZONE, CTA_SECCTX, CTA_TIMESTAMP, CTA_LABELS = 18, 19, 20, 22
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE = 1, 2, 3
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE = 4, 5, 6
CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE = 7, 8, 9
CTA_PROTOINFO_TCP, CTA_PROTOINFO_DCCP, CTA_PROTOINFO_SCTP = 1, 2, 3
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2

IPS_SEEN_REPLY, IPS_ASSURED, IPS_OFFLOAD, IPS_HW_OFFLOAD = 1 << 1, 1 << 2, 1 << 14, 1 << 15

TCP_STATES = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
              "CLOSE", "SYN_SENT2"]
SCTP_STATES = ["NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT", "SHUTDOWN_RECD",
               "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"]
DCCP_STATES = ["NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT", "IGNORE",
               "INVALID"]
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "icmpv6", 132: "sctp", 136: "udplite"}

_hdr = struct.Struct("=IHHII")
_nla = struct.Struct("=HH")
_u16be = struct.Struct(">H")
_u32be = struct.Struct(">I")
_u64be = struct.Struct(">Q")


class CtnetlinkError(Failure):
    pass


def _attrs(buf: bytes, off: int, end: int) -> dict[int, tuple[int, int]]:
    """{type: (start, end)} of the attributes in buf[off:end]."""
    out = {}
    unpack = _nla.unpack_from
    while off + 4 <= end:
        ln, typ = unpack(buf, off)
        if ln < 4:
            break
        out[typ & NLA_TYPE_MASK] = (off + 4, off + ln)
        off += (ln + 3) & ~3
    return out


def _tuple(buf: bytes, span: tuple[int, int]) -> tuple[Tuple, int, int | None]:
    a = _attrs(buf, *span)
    ip = _attrs(buf, *a[CTA_TUPLE_IP]) if CTA_TUPLE_IP in a else {}
    if CTA_IP_V4_SRC in ip:
        s, d, fam = ip[CTA_IP_V4_SRC], ip[CTA_IP_V4_DST], socket.AF_INET
    else:
        s, d, fam = ip[CTA_IP_V6_SRC], ip[CTA_IP_V6_DST], socket.AF_INET6
    t = Tuple(socket.inet_ntop(fam, buf[s[0]:s[1]]), socket.inet_ntop(fam, buf[d[0]:d[1]]))
    protonum = 0
    if CTA_TUPLE_PROTO in a:
        p = _attrs(buf, *a[CTA_TUPLE_PROTO])
        protonum = buf[p[CTA_PROTO_NUM][0]]
        if CTA_PROTO_SRC_PORT in p:
            t.sport = _u16be.unpack_from(buf, p[CTA_PROTO_SRC_PORT][0])[0]
            t.dport = _u16be.unpack_from(buf, p[CTA_PROTO_DST_PORT][0])[0]
        for idk, tyk, cok in ((CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE),
                              (CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE)):
            if tyk in p:
                t.icmp_type = buf[p[tyk][0]]
                t.icmp_code = buf[p[cok][0]]
                t.icmp_id = _u16be.unpack_from(buf, p[idk][0])[0]
    if protonum == 47 and t.sport is not None:  # GRE keys travel in the port attributes
        t.srckey, t.dstkey, t.sport, t.dport = t.sport, t.dport, None, None
    zone = _u16be.unpack_from(buf, a[CTA_TUPLE_ZONE][0])[0] if CTA_TUPLE_ZONE in a else None
    return t, protonum, zone


def decode_entry(buf: bytes, off: int, end: int) -> Entry:
    """One IPCTNL_MSG_CT_NEW message body (after nlmsghdr and nfgenmsg)."""
    family = buf[off - 4]
    a = _attrs(buf, off, end)
    orig, protonum, zo = _tuple(buf, a[CTA_TUPLE_ORIG])
    reply, _, zr = _tuple(buf, a[CTA_TUPLE_REPLY])
    if zo is not None:
        orig.zone = zo
    if zr is not None:
        reply.zone = zr
    status = _u32be.unpack_from(buf, a[CTA_STATUS][0])[0] if CTA_STATUS in a else 0
    state = None
    if CTA_PROTOINFO in a:
        pi = _attrs(buf, *a[CTA_PROTOINFO])
        for key, names in ((CTA_PROTOINFO_TCP, TCP_STATES), (CTA_PROTOINFO_SCTP, SCTP_STATES),
                           (CTA_PROTOINFO_DCCP, DCCP_STATES)):
            if key in pi:
                inner = _attrs(buf, *pi[key])
                if 1 in inner:
                    idx = buf[inner[1][0]]
                    state = names[idx] if idx < len(names) else str(idx)
    offload = "HW_OFFLOAD" if status & IPS_HW_OFFLOAD else "OFFLOAD" if status & IPS_OFFLOAD else None
    e = Entry(
        l3="ipv4" if family == socket.AF_INET else "ipv6",
        proto=PROTO_NAMES.get(protonum, str(protonum)), protonum=protonum,
        timeout=None if offload else (_u32be.unpack_from(buf, a[CTA_TIMEOUT][0])[0] if CTA_TIMEOUT in a else None),
        state=state, orig=orig, reply=reply,
        unreplied=not status & IPS_SEEN_REPLY, assured=bool(status & IPS_ASSURED) and not offload, offload=offload,
        mark=_u32be.unpack_from(buf, a[CTA_MARK][0])[0] if CTA_MARK in a else None,
        zone=_u16be.unpack_from(buf, a[CTA_ZONE][0])[0] if CTA_ZONE in a else None,
        use=_u32be.unpack_from(buf, a[CTA_USE][0])[0] if CTA_USE in a else None,
        id=_u32be.unpack_from(buf, a[CTA_ID][0])[0] if CTA_ID in a else None,
    )
    for key, t in ((CTA_COUNTERS_ORIG, orig), (CTA_COUNTERS_REPLY, reply)):
        if key in a:
            c = _attrs(buf, *a[key])
            t.packets = _u64be.unpack_from(buf, c[CTA_COUNTERS_PACKETS][0])[0]
            t.bytes = _u64be.unpack_from(buf, c[CTA_COUNTERS_BYTES][0])[0]
    if CTA_SECCTX in a:
        sc = _attrs(buf, *a[CTA_SECCTX])
        if 1 in sc:
            e.secctx = buf[sc[1][0]:sc[1][1]].rstrip(b"\0").decode()
    return e


def _request(seq: int) -> bytes:
    nfgen = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
    return _hdr.pack(16 + len(nfgen), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                     NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + nfgen


def dump_buffers(fd_socket: socket.socket | None = None) -> Iterator[bytes]:
    """Raw receive buffers of a full conntrack dump of the current netns."""
    s = fd_socket or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        start_dump(s)
        while True:
            buf = s.recv(1 << 20)
            if not buf:
                return
            yield buf
            # stop after the message that says DONE (checked by the consumer too)
            if _has_done(buf):
                return
    finally:
        if fd_socket is None:
            s.close()


def messages(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, offset, end) of each netlink message in a receive buffer (the one loop over messages)."""
    off, n = 0, len(buf)
    while off + 16 <= n:
        ln, typ = struct.unpack_from("=IH", buf, off)
        if ln < 16 or off + ln > n:
            return  # truncated: never read past what the kernel sent
        yield typ, off, off + ln
        off += (ln + 3) & ~3


def error_code(buf: bytes, off: int) -> int:
    """The (positive) errno an NLMSG_ERROR message carries; 0 is an ACK."""
    code: int = -struct.unpack_from("=i", buf, off + 16)[0]
    return code


def _has_done(buf: bytes) -> bool:
    for typ, off, _end in messages(buf):
        if typ == NLMSG_DONE:
            return True
        if typ == NLMSG_ERROR and error_code(buf, off):
            raise CtnetlinkError(f"ctnetlink dump failed: {os.strerror(error_code(buf, off))}")
    return False


def is_conntrack(typ: int, msg: int | None = None) -> bool:
    """A ctnetlink message (of type ``msg``: IPCTNL_MSG_CT_NEW, _DELETE, ... when given)."""
    return typ >> 8 == NFNL_SUBSYS_CTNETLINK and (msg is None or typ & 0xFF == msg)


def entries_from(buffers: Iterable[bytes]) -> Iterator[Entry]:
    for buf in buffers:
        for typ, off, end in messages(buf):
            if typ == NLMSG_DONE:
                return
            if is_conntrack(typ):
                yield decode_entry(buf, off + 20, end)


def decode_messages(buf: bytes | bytearray | memoryview) -> tuple[list[Entry], int, bool]:
    """The entries of one receive buffer (dump or events), how many ctnetlink messages in it
    were malformed, and whether it ends the dump: the pure-Python twin of the C
    ``netlink_feed``. An NLMSG_ERROR raises."""
    data = bytes(buf)
    out: list[Entry] = []
    bad = 0
    for typ, off, end in messages(data):
        if typ == NLMSG_DONE:
            return out, bad, True
        if typ == NLMSG_ERROR and end - off >= 20 and error_code(data, off):
            raise CtnetlinkError(f"ctnetlink dump failed: {os.strerror(error_code(data, off))}")
        if is_conntrack(typ):
            try:
                out.append(decode_entry(data, off + 20, end))
            except (KeyError, IndexError, ValueError, struct.error):
                bad += 1
    return out, bad, False


def has_done(buf: bytes | bytearray, n: int) -> bool:
    """Does buf[:n] hold the NLMSG_DONE that ends a dump? (An NLMSG_ERROR raises.) In C when built:
    the reader thread asks it of every buffer, before it reads on."""
    if accel.accelerated() and fastscan is not None:
        with memoryview(buf) as view:
            return fastscan.netlink_done(view[:n])
    return _has_done(bytes(buf[:n]))


def start_dump(sock: socket.socket) -> None:
    """Ask for every entry of the socket's netns (the replies are read with ``receive``)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    except OSError:
        pass
    sock.bind((0, 0))
    sock.send(_request(int.from_bytes(os.urandom(3), "little") or 1))


class DumpSource:
    """A ctnetlink dump of one netns that ``listing_files.tally_stream_multi`` reads straight into its
    aggregators (C: ``netlink_feed``; Python: ``decode_messages``), with no listing text."""

    is_netlink_dump = True

    def __init__(self, sock: socket.socket):
        self.sock = sock
        # read the next part of the dump in a thread while this one is counted: less wall time, more
        # CPU (a hand-over per 32 KB part); False for the exporter's refresh, which is paid in CPU
        self.overlap = True

    def start(self) -> socket.socket:
        """Send the dump request; the socket then has the replies to read."""
        start_dump(self.sock)
        return self.sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DumpSource:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()


def listing_source(ref: NetnsRef) -> tuple[DumpSource, str, bool]:
    """(source, label, tailed) over a ctnetlink dump of the live netns ``ref`` (a pinned NetnsRef)."""
    try:
        if nsmod.is_current(ref):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        else:
            fd = nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock = socket.socket(fileno=fd)
    except OSError as e:
        raise CtnetlinkError(f"ctnetlink is not available ({e}): no /proc/net/nf_conntrack and no netlink dump") from None
    return DumpSource(sock), "ctnetlink dump", False


# ---- deleting entries (flush) --------------------------------------------------------------------

IPCTNL_MSG_CT_DELETE = 2
NLM_F_ACK = 0x4


def _attr(typ: int, payload: bytes, nested: bool = False) -> bytes:
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, typ | (NLA_F_NESTED if nested else 0)) + payload + b"\0" * ((4 - ln % 4) % 4)


def _tuple_attr(e: Entry, t: Tuple) -> bytes:
    fam = socket.AF_INET6 if e.l3 == "ipv6" else socket.AF_INET
    if fam == socket.AF_INET:
        ip = _attr(CTA_IP_V4_SRC, socket.inet_pton(fam, t.src)) + _attr(CTA_IP_V4_DST, socket.inet_pton(fam, t.dst))
    else:
        ip = _attr(CTA_IP_V6_SRC, socket.inet_pton(fam, t.src)) + _attr(CTA_IP_V6_DST, socket.inet_pton(fam, t.dst))
    proto = _attr(CTA_PROTO_NUM, bytes([e.protonum]))
    if t.sport is not None:
        proto += _attr(CTA_PROTO_SRC_PORT, _u16be.pack(t.sport)) + _attr(CTA_PROTO_DST_PORT, _u16be.pack(t.dport))
    elif t.srckey is not None:
        proto += _attr(CTA_PROTO_SRC_PORT, _u16be.pack(t.srckey)) + _attr(CTA_PROTO_DST_PORT, _u16be.pack(t.dstkey))
    elif t.icmp_type is not None:
        six = e.proto == "icmpv6"
        proto += _attr(CTA_PROTO_ICMPV6_ID if six else CTA_PROTO_ICMP_ID, _u16be.pack(t.icmp_id or 0))
        proto += _attr(CTA_PROTO_ICMPV6_TYPE if six else CTA_PROTO_ICMP_TYPE, bytes([t.icmp_type or 0]))
        proto += _attr(CTA_PROTO_ICMPV6_CODE if six else CTA_PROTO_ICMP_CODE, bytes([t.icmp_code or 0]))
    body = _attr(CTA_TUPLE_IP, ip, True) + _attr(CTA_TUPLE_PROTO, proto, True)
    if t.zone is not None:
        body += _attr(CTA_TUPLE_ZONE, _u16be.pack(t.zone))
    return body


def delete_message(e: Entry, seq: int) -> bytes:
    fam = socket.AF_INET6 if e.l3 == "ipv6" else socket.AF_INET
    body = struct.pack("=BBH", fam, 0, 0) + _attr(CTA_TUPLE_ORIG, _tuple_attr(e, e.orig), True)
    if e.zone:
        body += _attr(CTA_ZONE, _u16be.pack(e.zone))
    if e.id is not None:
        # The kernel deletes only the entry with this id: one re-created with the same tuple
        # since the dump (a new connection) answers ENOENT and is kept.
        body += _attr(CTA_ID, _u32be.pack(e.id))
    return _hdr.pack(16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
                     NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


ACK_EVERY = 512  # flush's delete requests: the kernel acknowledges one in this many (the others only fail aloud)


def send_deletes(sock: socket.socket, requests: bytes, ack_every: int = ACK_EVERY,
                 progress: Callable[[int, int], object] | None = None) -> tuple[int, int]:
    """Send prebuilt CT_DELETE requests (``_fastscan.netlink_select``'s, sequence numbers from 1, an ACK
    asked on every ``ack_every``-th) over one socket, a batch up to each acknowledged one, and count the
    answers: (deleted, already gone or replaced). Only failures and the batch ends come back, so the
    kernel's answers are a few hundred messages, not one per entry."""
    try:
        sock.bind((0, 0))
    except OSError:
        pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    req = bytearray(requests)
    offs = []
    off = 0
    while off + 16 <= len(req):
        (ln,) = struct.unpack_from("=I", req, off)
        if ln < 16 or off + ln > len(req):
            raise CtnetlinkError("a malformed delete request")  # cannot happen: netlink_select built it
        offs.append(off)
        off += (ln + 3) & ~3
    if offs:  # the last one is acknowledged too, whatever its number
        (flags,) = struct.unpack_from("=H", req, offs[-1] + 6)
        struct.pack_into("=H", req, offs[-1] + 6, flags | NLM_F_ACK)
    view = memoryview(req)
    sent = gone = 0
    for i in range(0, len(offs), ack_every):
        part = offs[i:i + ack_every]
        end = offs[i + len(part)] if i + len(part) < len(offs) else len(req)
        last_seq = struct.unpack_from("=I", req, part[-1] + 8)[0]
        sock.send(view[part[0]:end])
        sent += len(part)
        done = False
        while not done:
            buf = sock.recv(1 << 20)
            for typ, moff, _end in messages(buf):
                if typ != NLMSG_ERROR:
                    continue
                err = error_code(buf, moff)
                (seq,) = struct.unpack_from("=I", buf, moff + 16 + 4 + 8)  # the request it answers
                if err == errno.ENOENT:  # expired, deleted, or re-created (another id) meanwhile
                    gone += 1
                elif err:
                    raise CtnetlinkError(f"deleting an entry failed: {os.strerror(err)}")
                if seq == last_seq:
                    done = True
        if progress is not None:
            progress(sent, len(offs))
    return sent - gone, gone


def delete_entries(sock: socket.socket, entries: list[Entry], batch: int = 256) -> tuple[int, int]:
    """Delete entries by their original tuple and id; returns (deleted, already gone or replaced)."""
    try:
        sock.bind((0, 0))
    except OSError:
        pass
    deleted = gone = 0
    for i in range(0, len(entries), batch):
        part = entries[i:i + batch]
        sock.send(b"".join(delete_message(e, i + j + 1) for j, e in enumerate(part)))
        acks = 0
        while acks < len(part):
            buf = sock.recv(1 << 16)
            for typ, off, _end in messages(buf):
                if typ != NLMSG_ERROR:
                    continue
                err = error_code(buf, off)
                acks += 1
                if err == 0:
                    deleted += 1
                elif err == errno.ENOENT:  # expired, deleted, or re-created (another id) meanwhile
                    gone += 1
                else:
                    raise CtnetlinkError(f"deleting an entry failed: {os.strerror(err)}")
    return deleted, gone
