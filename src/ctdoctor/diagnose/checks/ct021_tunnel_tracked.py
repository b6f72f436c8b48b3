"""Tunnel traffic tracked by conntrack.

What it detects
    Conntrack entries for overlay tunnels between hosts: VXLAN (UDP 4789),
    Geneve (UDP 6081), flannel's VXLAN (UDP 8472) and GRE, in the entry
    listing or in Open vSwitch's conntrack dump (``ovs-appctl
    dpctl/dump-conntrack``). Information; a warning while the table is under
    pressure (at the warning fill, or dropping).

Why it matters
    The encapsulated packets between two hypervisors or nodes carry every
    tenant's or pod's traffic; tracking the outer flow buys nothing (no filter
    needs its state) but costs an entry per tunnel flow and a lookup per
    packet, and a full table then drops the tunnel itself: every workload on
    the host loses its network at once. The tunnel's flows are long-lived UDP
    streams that stay ASSURED, so early drop cannot evict them.

How to fix
    Exempt the tunnel from conntrack with NOTRACK rules in the raw table
    (both directions), plus an accept for ``untracked`` packets in a stateful
    filter: ``ctdoctor notrack --port 4789 --proto udp`` prints them (6081 for
    Geneve, 8472 for flannel); for GRE, ``nft add rule inet raw prerouting ip
    protocol gre notrack`` (and output).
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Evidence, Finding, Needs, NetnsState, ev

CODE = "CT021"
TITLE = "tunnel traffic (VXLAN, Geneve, GRE) is tracked"
PORTS = {"vxlan": 4789, "geneve": 6081, "vxlan-8472": 8472}


def needs(ctx: Context) -> Needs:
    return Needs(listings={st.name for st in ctx.namespaces if ctx.listing_matters(st)})


def run(ctx: Context) -> Iterator[Finding]:
    for st in ctx.namespaces:
        s = ctx.summary(st) if ctx.listing_matters(st) else None
        if s is None or not s.tunnels:
            continue
        yield _finding(ctx, st, s.tunnels, ev(s.listed, s.source), s.source)
    ovs = ctx.ovs_conntrack()
    if ovs and ovs[0] and not any(ctx.listing_matters(st) and (s := ctx.summary(st)) is not None and s.tunnels
                                  for st in ctx.namespaces):
        init = ctx.snap.init
        if init is not None:
            yield _finding(ctx, init, ovs[0], None, ovs[1])


def _finding(ctx: Context, st: NetnsState, tunnels: dict[str, int], listed: Evidence | None, source: str) -> Finding:
    n = sum(tunnels.values())
    what = ", ".join(f"{k} {v}" for k, v in sorted(tunnels.items(), key=lambda kv: -kv[1]))
    fixes = [f"ctdoctor notrack --port {PORTS[k]} --proto udp" for k in tunnels if k in PORTS]
    if "gre" in tunnels:
        fixes.append("nft add rule inet raw prerouting ip protocol gre notrack")
    return Finding(
        CODE, WARNING if ctx.under_pressure(st) else INFO, TITLE, netns=st.name,
        summary=f"netns {st.label}: {n} entries are overlay tunnel flows ({what})",
        evidence={"tunnels": ev(tunnels, source), "listed": listed, "fill": st.fill},
        explanation="The outer flows of an overlay network are tracked: each costs an entry and a lookup per "
                    "packet, and if the table fills, the tunnel itself is dropped and every workload behind it "
                    "loses its network. Nothing needs their state.",
        fix=fixes,
    )
