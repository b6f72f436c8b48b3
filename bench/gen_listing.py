"""Write a realistic /proc/net/nf_conntrack listing (today's format) of N lines.

Mix: TCP in every state (mostly ESTABLISHED and TIME_WAIT), UDP replied and
unreplied, ICMP echo, ~10 % IPv6 printed in full form as the kernel does,
a skewed source distribution (a few clients own much of the table) and some
NATed entries whose reply tuple differs. Deterministic for a given seed.
Documentation and private ranges only.

    python bench/gen_listing.py N OUT [--seed S] [--format proc|extended]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys

TCP_STATES = [("ESTABLISHED", 55), ("TIME_WAIT", 25), ("SYN_SENT", 4), ("CLOSE_WAIT", 4), ("FIN_WAIT", 3),
              ("SYN_RECV", 2), ("LAST_ACK", 2), ("CLOSE", 5)]
TIMEOUTS = {"ESTABLISHED": 432000, "TIME_WAIT": 120, "SYN_SENT": 120, "CLOSE_WAIT": 60, "FIN_WAIT": 120,
            "SYN_RECV": 60, "LAST_ACK": 30, "CLOSE": 10}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("proc", "extended"), default="proc")
    a = ap.parse_args(argv)
    rnd = random.Random(a.seed)
    states = [s for s, w in TCP_STATES for _ in range(w)]
    # Skewed clients, as behind a NAT gateway or on a node: a pool of 20,000 where a few
    # own much of the table (index = pool size x U^3 puts the mass on the first ones).
    pool = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(20000)]
    servers = [f"192.0.2.{i}" for i in range(1, 40)] + [f"198.51.100.{i}" for i in range(1, 20)]
    v6_clients = [ipaddress.IPv6Address(f"2001:db8:{rnd.randrange(65536):x}::{rnd.randrange(1, 65536):x}")
                  for _ in range(300)]
    v6_servers = [ipaddress.IPv6Address(f"2001:db8:ffff::{i:x}") for i in range(1, 30)]
    ports = [443, 80, 53, 8080, 5432, 6379, 22, 3306]
    proc = a.format == "proc"

    def v6(ip):
        return ip.exploded if proc else ip.compressed

    out = open(a.out, "w") if a.out != "-" else sys.stdout  # noqa: SIM115 - closed at the end unless stdout
    buf = []
    for _i in range(a.n):
        r = rnd.random()
        six = rnd.random() < 0.1
        if six:
            src, dst = v6(rnd.choice(v6_clients)), v6(rnd.choice(v6_servers))
            l3 = "ipv6     10 "
        else:
            src = pool[int(len(pool) * rnd.random() ** 3)]
            dst = rnd.choice(servers)
            l3 = "ipv4     2 "
        sport = rnd.randrange(1024, 65536)
        nat = not six and rnd.random() < 0.1
        rsrc = f"172.16.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" if nat else dst
        if r < 0.85:
            st = rnd.choice(states)
            dport = rnd.choice(ports)
            unrep = st == "SYN_SENT"
            assured = st in ("ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "FIN_WAIT", "LAST_ACK", "CLOSE")
            line = (f"{l3}tcp      6 {rnd.randrange(TIMEOUTS[st])} {st} src={src} dst={dst} sport={sport} "
                    f"dport={dport} {'[UNREPLIED] ' if unrep else ''}src={rsrc} dst={src} sport={dport} "
                    f"dport={sport} {'[ASSURED] ' if assured else ''}mark=0 {'zone=0 ' if proc else ''}use={2 if proc else 1}")
        elif r < 0.97:
            unrep = rnd.random() < 0.4
            dport = 53 if rnd.random() < 0.7 else 123
            line = (f"{l3}udp      17 {rnd.randrange(1, 120)} src={src} dst={dst} sport={sport} dport={dport} "
                    f"{'[UNREPLIED] ' if unrep else ''}src={rsrc} dst={src} sport={dport} dport={sport} "
                    f"{'' if unrep or rnd.random() < 0.5 else '[ASSURED] '}mark=0 {'zone=0 ' if proc else ''}"
                    f"use={2 if proc else 1}")
        else:
            ident = rnd.randrange(65536)
            if six:
                line = (f"{l3}icmpv6   58 {rnd.randrange(30)} src={src} dst={dst} type=128 code=0 id={ident} "
                        f"src={dst} dst={src} type=129 code=0 id={ident} mark=0 {'zone=0 ' if proc else ''}"
                        f"use={2 if proc else 1}")
            else:
                line = (f"{l3}icmp     1 {rnd.randrange(30)} src={src} dst={dst} type=8 code=0 id={ident} "
                        f"src={dst} dst={src} type=0 code=0 id={ident} mark=0 {'zone=0 ' if proc else ''}"
                        f"use={2 if proc else 1}")
        buf.append(line)
        if len(buf) >= 10000:
            out.write("\n".join(buf) + "\n")
            buf = []
    if buf:
        out.write("\n".join(buf) + "\n")
    if out is not sys.stdout:
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
