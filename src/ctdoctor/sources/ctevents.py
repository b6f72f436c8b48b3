"""ctnetlink events: who is creating entries right now (``conntrack -E``, aggregated).

A NETLINK_NETFILTER socket made inside the netns joins the multicast group of NEW
events (and a second one DESTROY events). Each NEW event carries the entry as a
dump does, so the same decoder reads a receive buffer straight into the same
aggregator as ``top``, which groups them by the ``--by`` keys.

When events come faster than we read them the kernel drops them and the next
``recv`` fails with ENOBUFS: it says *that* events were lost, not how many. We
count the windows that lost events and say the rates there are a lower bound.
The receive buffer is made large (SO_RCVBUFFORCE as root) so that this is rare.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

from ctdoctor.errors import Failure
from ctdoctor.listing import accel
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.ctnetlink import NETLINK_NETFILTER, is_conntrack, messages

try:
    from ctdoctor.listing import _fastscan as fastscan
except ImportError:  # built without a compiler: one datagram per recv
    fastscan = None  # type: ignore[assignment]

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


def count_messages(buf: bytes, msg: int = IPCTNL_MSG_CT_DELETE) -> int:
    """How many ctnetlink messages of one type (DESTROY events) a buffer holds."""
    return sum(1 for typ, _o, _e in messages(buf) if is_conntrack(typ, msg))


class Drain:
    """Every datagram waiting on a non-blocking event socket now, as a few large buffers (in C, GIL
    released, when built); ``lost`` turns true when the kernel reported ENOBUFS."""

    def __init__(self, sock: socket.socket, force_python: bool = False):
        self.sock, self.force_python = sock, force_python
        self.lost = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            if accel.accelerated() and not self.force_python and fastscan is not None:
                while True:
                    buf, lost = fastscan.drain_socket(self.sock.fileno(), 4 << 20)
                    self.lost = self.lost or lost
                    if not buf:
                        return
                    yield buf
                    if len(buf) < (4 << 20) - 65536:  # stopped because the socket was empty
                        return
            while True:  # one datagram per recv
                try:
                    buf = self.sock.recv(1 << 16)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self.lost = True
                        continue
                    raise
                if not buf:
                    return
                yield buf
        except OSError as e:
            raise Failure(f"reading conntrack events: {e}") from None


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
