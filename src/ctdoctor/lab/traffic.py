"""Traffic helpers that run *inside* a lab netns (``ip netns exec NS python -m ctdoctor.lab.traffic``).

Loopback only: every address used here is 127.0.0.0/8 or ::1. Each command
prints one JSON line with what it saw; ``session`` stays up and answers
commands on stdin so a held connection can outlive a table fill.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time

LOOP4 = "127.0.0.1"


def _out(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def _echo_server(port: int, host: str = LOOP4) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(4096)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _echo(c: socket.socket) -> None:
    with c:
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            try:
                c.sendall(d)
            except OSError:
                return


def _try_connect(port: int, timeout: float, host: str = LOOP4) -> dict[str, object]:
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.sendall(b"ping")
            c.settimeout(timeout)
            ok = c.recv(4) == b"ping"
        return {"ok": ok, "seconds": round(time.monotonic() - t0, 3)}
    except OSError as e:
        return {"ok": False, "error": type(e).__name__, "seconds": round(time.monotonic() - t0, 3)}


def session(port: int, server_port: int | None = None) -> None:
    """An echo server and one held client connection; commands on stdin: echo | connect T | quit."""
    if server_port is None:
        _echo_server(port)
    held = socket.create_connection((LOOP4, port), timeout=5)
    held.sendall(b"hello")
    assert held.recv(5) == b"hello"
    _out(ready=True, local_port=held.getsockname()[1])
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "echo":
            try:
                held.settimeout(float(cmd[1]) if len(cmd) > 1 else 3)
                held.sendall(b"still-up")
                _out(ok=held.recv(8) == b"still-up")
            except OSError as e:
                _out(ok=False, error=type(e).__name__)
        elif cmd[0] == "connect":
            _out(**_try_connect(int(cmd[2]) if len(cmd) > 2 else port, float(cmd[1])))
        elif cmd[0] == "quit":
            break


def short(port: int, n: int) -> None:
    """n short TCP connections, closed by the client first: TIME_WAIT entries."""
    srv = _echo_server(port)
    done = 0
    for _ in range(n):
        c = socket.create_connection((LOOP4, port), timeout=5)
        c.sendall(b"x")
        c.recv(1)
        c.close()
        done += 1
    time.sleep(0.3)  # let the last FIN/ACKs pass
    srv.close()
    _out(connections=done)


def syn(port: int, n: int, wait: float) -> None:
    """n connection attempts whose SYNs are dropped: SYN_SENT [UNREPLIED] entries."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((LOOP4, port))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(wait)
    _out(attempts=len(socks))
    for s in socks:
        s.close()


def paced(src: str, dst: str, port: int, per_second: float, seconds: float) -> None:
    """New UDP flows from ``src`` at a steady rate: each datagram from a fresh socket (a new source
    port, so a new conntrack entry); no server needed."""
    n = int(per_second * seconds)
    t0 = time.monotonic()
    sent = 0
    for i in range(n):
        delay = t0 + i / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent += _datagram(dst, port, src)
    _out(sent=sent, seconds=round(time.monotonic() - t0, 3))


def _datagram(dst: str, port: int, src: str | None = None) -> int:
    """One datagram from a fresh socket (a new source port: a new conntrack entry); 1 if sent."""
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if src is not None:
            s.bind((src, 0))
        s.sendto(b"x", (dst, port))
        return 1
    except OSError:
        return 0
    finally:
        s.close()


def udp(port: int, n: int, host: str = LOOP4) -> None:
    """n UDP flows (distinct source ports) that nobody answers."""
    _out(sent=sum(_datagram(host, port) for _ in range(n)))


def connect_many(port: int, n: int, hold: float, server_port: int | None = None) -> None:
    """n connections to port (the server may listen elsewhere, behind DNAT); hold them open."""
    if server_port is not None:
        _echo_server(server_port)
    conns, ok = [], 0
    for _ in range(n):
        try:
            c = socket.create_connection((LOOP4, port), timeout=3)
            c.sendall(b"ping")
            c.settimeout(3)
            if c.recv(4) == b"ping":
                ok += 1
            conns.append(c)
        except OSError:
            pass
    _out(ok=ok, attempts=n)
    end = time.monotonic() + hold
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not sys.stdin.readline():
            break
    for c in conns:
        c.close()


def mixed(hold: float) -> None:
    """A bit of everything, held open: TCP (v4, v6, several states), UDP replied and unreplied,
    ICMP echo, traffic to the DNAT port 8080 (see the nat-loopback rule) and to the zoned UDP port 5000."""
    _echo_server(7001)
    srv6 = socket.socket(socket.AF_INET6)
    srv6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv6.bind(("::1", 7002))
    srv6.listen(64)
    def accept6() -> None:
        while True:
            threading.Thread(target=_echo, args=(srv6.accept()[0],), daemon=True).start()

    threading.Thread(target=accept6, daemon=True).start()
    _echo_server(9090)  # behind the DNAT of port 8080
    held: list[socket.socket] = []
    held += _echoed((LOOP4, 7001), 5)
    held += _echoed(("::1", 7002), 3)
    for c in _echoed((LOOP4, 7001), 4):  # TIME_WAIT
        c.close()
    held += _echoed((LOOP4, 8080), 3)  # through the DNAT
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # UDP echo: replied
    us.bind((LOOP4, 7003))

    def udp_echo() -> None:
        while True:
            d, a = us.recvfrom(100)
            us.sendto(d, a)

    threading.Thread(target=udp_echo, daemon=True).start()
    for _ in range(3):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", (LOOP4, 7003))
        u.settimeout(2)
        u.recv(10)
        held.append(u)
    for port in (7004, 7005, 5000, 5000):  # unreplied (nobody listens; 5000 is in zone 7)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", (LOOP4, port))
        held.append(u)
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.sendto(b"x", ("::1", 7006))
    held.append(u6)
    for _ in range(2):  # ICMP echo (ping socket)
        ic = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        ic.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01", (LOOP4, 0))
        held.append(ic)
    for _ in range(3):  # SYN_SENT: dropped by the lab's input rule on 9999
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((LOOP4, 9999))
        except BlockingIOError:
            pass
        held.append(s)
    time.sleep(0.3)
    _out(ready=True)
    end = time.monotonic() + hold
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not sys.stdin.readline():
            break


def _echoed(addr: tuple[str, int], n: int) -> list[socket.socket]:
    """``n`` TCP connections to an echo server, each having sent a byte and read it back."""
    out = []
    for _ in range(n):
        c = socket.create_connection(addr, timeout=3)
        c.sendall(b"x")
        c.recv(1)
        out.append(c)
    return out


def listen_events(seconds: float) -> None:
    """A ctnetlink destroy-event listener that never reads: deliveries fail (NETLINK_BROADCAST_ERROR)."""
    NETLINK_NETFILTER, SOL_NETLINK, NETLINK_BROADCAST_ERROR = 12, 270, 4
    NFNLGRP_CONNTRACK_DESTROY = 3
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.bind((0, 1 << (NFNLGRP_CONNTRACK_DESTROY - 1)))
    s.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_ERROR, 1)
    _out(ready=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not sys.stdin.readline():
            break
    s.close()


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "session":
        session(int(args[0]))
    elif cmd == "short":
        short(int(args[0]), int(args[1]))
    elif cmd == "syn":
        syn(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "paced":
        paced(args[0], args[1], int(args[2]), float(args[3]), float(args[4]))
    elif cmd == "udp":
        udp(int(args[0]), int(args[1]), args[2] if len(args) > 2 else LOOP4)
    elif cmd == "connect":
        _out(**_try_connect(int(args[0]), float(args[1])))
    elif cmd == "connect-many":
        connect_many(int(args[0]), int(args[1]), float(args[2]), int(args[3]) if len(args) > 3 else None)
    elif cmd == "mixed":
        mixed(float(args[0]))
    elif cmd == "listen-events":
        listen_events(float(args[0]))
    else:
        print(f"unknown traffic command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
