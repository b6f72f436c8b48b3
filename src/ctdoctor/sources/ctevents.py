"""ctnetlink events: who is creating entries right now (``conntrack -E``, aggregated).

A NETLINK_NETFILTER socket made inside the netns joins the multicast group of NEW
events (and a second one DESTROY events). Each NEW event carries the entry as a
dump does, so the same decoder turns a receive buffer into listing lines and the
same aggregator as ``top`` groups them by the ``--by`` keys.

When events come faster than we read them the kernel drops them and the next
``recv`` fails with ENOBUFS: it says *that* events were lost, not how many. We
count the windows that lost events and say the rates there are a lower bound.
The receive buffer is made large (SO_RCVBUFFORCE as root) so that this is rare.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from ctdoctor.errors import Failure
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.ctnetlink import NETLINK_NETFILTER

NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY = 1, 3
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
SO_RCVBUFFORCE = 33
RCVBUF = 64 << 20
IPCTNL_MSG_CT_DELETE = 2


class EventsUnavailable(Failure):
    pass


def open_events(ref: nsmod.NetnsRef, group: int, rcvbuf: int = RCVBUF) -> socket.socket:
    """A socket in the netns subscribed to one conntrack event group."""
    try:
        fd = nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except PermissionError as e:
        raise EventsUnavailable(f"conntrack events of netns {ref.name} need root (CAP_NET_ADMIN): {e}") from None
    except OSError as e:
        raise EventsUnavailable(f"no ctnetlink in netns {ref.name}: {e}") from None
    s = socket.socket(fileno=fd)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            pass
    try:
        s.bind((0, 0))
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    except OSError as e:
        s.close()
        if e.errno == errno.EPERM:
            raise EventsUnavailable(f"conntrack events of netns {ref.name} need root (CAP_NET_ADMIN)") from None
        raise EventsUnavailable(f"cannot subscribe to conntrack events in netns {ref.name}: {e}") from None
    s.setblocking(False)
    return s


def count_messages(buf: bytes) -> int:
    n, off, end = 0, 0, len(buf)
    while off + 16 <= end:
        ln, typ = struct.unpack_from("=IH", buf, off)
        if ln < 16:
            break
        if typ & 0xFF == IPCTNL_MSG_CT_DELETE and typ >> 8 == 1:
            n += 1
        off += (ln + 3) & ~3
    return n


@dataclass
class Window:
    """Events of one netns over one window."""

    netns: str
    seconds: float = 0.0
    new: int = 0
    destroyed: int = 0
    lost: bool = False  # ENOBUFS: the kernel dropped events, counts are a lower bound
    tally: object = None  # a top.Tally of the NEW events
    notes: list[str] = field(default_factory=list)


class EventCounter:
    """NEW and DESTROY events of one netns, aggregated by a top query, window after window."""

    def __init__(self, ref: nsmod.NetnsRef, query, force_python: bool = False, rcvbuf: int = RCVBUF):
        self.ref, self.query, self.force_python = ref, query, force_python
        self.new_sock = open_events(ref, NFNLGRP_CONNTRACK_NEW, rcvbuf)
        try:
            self.del_sock = open_events(ref, NFNLGRP_CONNTRACK_DESTROY, rcvbuf)
        except Failure:
            self.new_sock.close()
            raise

    def close(self) -> None:
        self.new_sock.close()
        self.del_sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _drain(self, s: socket.socket, w: Window):
        """Every datagram waiting now, as a few large buffers: in C (GIL released) when built."""
        from ctdoctor.top import accelerated

        try:
            if accelerated() and not self.force_python:
                from ctdoctor._fastscan import drain_socket

                while True:
                    buf, lost = drain_socket(s.fileno(), 4 << 20)
                    w.lost = w.lost or lost
                    if not buf:
                        return
                    yield buf
                    if len(buf) < (4 << 20) - 65536:  # stopped because the socket was empty
                        return
            while True:  # one datagram per recv
                try:
                    buf = s.recv(1 << 16)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        w.lost = True
                        continue
                    raise
                if not buf:
                    return
                yield buf
        except OSError as e:
            raise Failure(f"reading conntrack events of netns {self.ref.name}: {e}") from None

    def window(self, seconds: float, stop=None) -> Window:
        """Read events for ``seconds`` (or until ``stop()`` is true) and aggregate them."""
        from ctdoctor.sources.ctnetlink import lines_from
        from ctdoctor.top import Tally

        agg = self.query.aggregator(self.force_python)
        w = Window(self.ref.name)
        t0 = time.monotonic()
        end = t0 + seconds
        socks = [self.new_sock, self.del_sock]
        while True:
            left = end - time.monotonic()
            if left <= 0 or (stop is not None and stop()):
                break
            r, _, _ = select.select(socks, [], [], min(left, 0.2))
            for s in r:
                for buf in self._drain(s, w):
                    if s is self.del_sock:
                        w.destroyed += count_messages(buf)
                        continue
                    for text in lines_from([buf], self.force_python):
                        if text:
                            lines, _bad, _fb = agg.feed(text, False)
                            w.new += lines
        w.seconds = time.monotonic() - t0
        w.tally = Tally(self.query, agg, w.new)
        return w


def events_enabled(ref: nsmod.NetnsRef) -> str | None:
    """Why events would not come (net.netfilter.nf_conntrack_events = 0 in that netns), else None."""
    try:
        fd = nsmod.open_in(ref, "/proc/sys/net/netfilter/nf_conntrack_events")
    except OSError:
        return None
    try:
        v = os.pread(fd, 16, 0).strip()
    finally:
        os.close(fd)
    if v == b"0":
        return (f"net.netfilter.nf_conntrack_events is 0 in netns {ref.name}: the kernel sends no events "
                f"(set it to 1 or 2 there to measure new-flow rates)")
    return None
