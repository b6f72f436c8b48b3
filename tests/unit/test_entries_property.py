"""Generated entries survive rendering in /proc and conntrack -L -o extended format and parsing back."""

import ipaddress
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.listing.entry import Entry, Tuple, format_entry, parse_line

TCP_STATES = ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"]
port = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
counter = st.integers(0, 2**63)
v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(0, 2**128 - 1).map(
    lambda n: socket.inet_ntop(socket.AF_INET6, ipaddress.IPv6Address(n).packed))  # as conntrack prints it


@st.composite
def entries(draw):
    l3 = draw(st.sampled_from(["ipv4", "ipv6"]))
    addr = v4 if l3 == "ipv4" else v6
    proto = draw(st.sampled_from(["tcp", "udp", "udplite", "sctp", "dccp", "icmp" if l3 == "ipv4" else "icmpv6",
                                  "gre", "unknown"]))
    protonum = {"tcp": 6, "udp": 17, "udplite": 136, "sctp": 132, "dccp": 33, "icmp": 1, "icmpv6": 58,
                "gre": 47}.get(proto) or draw(st.sampled_from([2, 4, 41, 103]))
    acct = draw(st.booleans())
    zdir = draw(st.sampled_from([None, "both", "orig", "reply"]))

    def tup():
        t = Tuple(draw(addr), draw(addr))
        if proto in ("tcp", "udp", "udplite", "sctp", "dccp"):
            t.sport, t.dport = draw(port), draw(port)
        elif proto in ("icmp", "icmpv6"):
            t.icmp_type, t.icmp_code, t.icmp_id = draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(port)
        elif proto == "gre":
            t.srckey, t.dstkey = draw(u32), draw(u32)
        if acct:
            t.packets, t.bytes = draw(counter), draw(counter)
        return t

    orig, reply = tup(), tup()
    if zdir == "orig":
        orig.zone = draw(st.integers(0, 65535))
    elif zdir == "reply":
        reply.zone = draw(st.integers(0, 65535))
    offload = draw(st.sampled_from([None, None, None, "OFFLOAD", "HW_OFFLOAD"]))
    state = None
    if proto == "tcp":
        state = draw(st.sampled_from(TCP_STATES))
    elif proto == "sctp":
        state = draw(st.sampled_from(["CLOSED", "COOKIE_WAIT", "ESTABLISHED", "SHUTDOWN_SENT"]))
    elif proto == "dccp":
        state = draw(st.sampled_from(["REQUEST", "OPEN", "TIMEWAIT"]))
    return Entry(
        l3=l3, proto=proto, protonum=protonum,
        timeout=None if offload else draw(st.integers(0, 432000)),
        state=state, orig=orig, reply=reply,
        unreplied=draw(st.booleans()), assured=draw(st.booleans()) if not offload else False, offload=offload,
        mark=draw(u32), zone=draw(st.integers(0, 65535)) if zdir == "both" else None,
        secctx=draw(st.sampled_from([None, "system_u:object_r:unlabeled_t:s0"])),
        delta_time=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        use=draw(st.integers(1, 10)),
    )


@settings(max_examples=400, deadline=None)
@given(entries())
def test_proc_format_round_trip(e):
    assert parse_line(format_entry(e, "proc")) == e


@settings(max_examples=400, deadline=None)
@given(entries(), st.one_of(st.none(), u32))
def test_conntrack_extended_round_trip(e, ct_id):
    e.id = ct_id
    assert parse_line(format_entry(e, "extended")) == e


@settings(max_examples=200, deadline=None)
@given(entries())
def test_conntrack_default_round_trip(e):
    assert parse_line(format_entry(e, "default")) == e
