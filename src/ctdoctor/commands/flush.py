"""ctdoctor flush: delete entries by state, address or port, over ctnetlink — never ASSURED ESTABLISHED
ones unless asked, because deleting them breaks live connections under a stateful filter or NAT."""

from __future__ import annotations

import socket

from ctdoctor.commands.common import Needs, bounded
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--state", required=True, metavar="S[,S]",
                   help="states to delete: TIME_WAIT, SYN_SENT, CLOSE, UNREPLIED, ... (ALL for any state)")
    p.add_argument("--src", metavar="CIDR", help="only entries from these sources")
    p.add_argument("--dst", metavar="CIDR", help="only entries to these destinations")
    p.add_argument("--port", type=bounded(int, 0, 65535), metavar="N", help="only entries whose original sport or dport is N")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    p.add_argument("--include-established", action="store_true",
                   help="also delete ASSURED ESTABLISHED entries (breaks live connections behind NAT/stateful rules)")


def _matches(e, states, port, src, dst, include_est):
    import ipaddress

    from ctdoctor.top import label

    lab = label(e)
    protected = e.state == "ESTABLISHED" and e.assured and not include_est
    if protected:
        return False, True
    if "ALL" not in states and not (lab in states or (e.unreplied and "UNREPLIED" in states)
                                    or (e.assured and "ASSURED" in states)):
        return False, False
    if port is not None and port not in (e.orig.sport, e.orig.dport):
        return False, False
    for nets, addr in ((src, e.orig.src), (dst, e.orig.dst)):
        if nets:
            a = ipaddress.ip_address(addr)
            if not any(a.version == n.version and a in n for n in nets):
                return False, False
    return True, False


def requires(args) -> Needs:
    return Needs(live=True, root=True, what="flush", why="CAP_NET_ADMIN to delete entries")

def run(args) -> int:
    import ipaddress

    from ctdoctor.render.jsonout import emit
    from ctdoctor.sources import ctnetlink
    from ctdoctor.sources import netns as nsmod

    states = {s.strip().upper() for s in args.state.split(",") if s.strip()}
    if not states:
        raise UsageError("--state needs at least one state")
    from ctdoctor.kernel import check_states

    check_states(sorted(states), extra=("ALL",))
    if "ESTABLISHED" in states and not args.include_established:
        raise UsageError("refusing to delete ESTABLISHED entries: their connections would break under NAT or a "
                         "stateful filter; add --include-established if that is what you want")
    nets = {}
    for name in ("src", "dst"):
        v = getattr(args, name)
        try:
            nets[name] = [ipaddress.ip_network(c.strip(), strict=False) for c in v.split(",")] if v else None
        except ValueError:
            raise UsageError(f"--{name} {v}: not an address or CIDR") from None
    wanted = getattr(args, "netns", None)
    if wanted == "all":
        raise UsageError("flush works on one netns at a time: name it with --netns")
    (ref,) = nsmod.select(nsmod.discover(), wanted)

    def sock():
        return socket.socket(fileno=nsmod.socket_in(ref, socket.AF_NETLINK, socket.SOCK_RAW,
                                                    ctnetlink.NETLINK_NETFILTER))

    s = sock()
    entries = list(ctnetlink.entries_from(ctnetlink.dump_buffers(s)))
    s.close()
    before = len(entries)
    matched, protected = [], 0
    for e in entries:
        ok, prot = _matches(e, states, args.port, nets["src"], nets["dst"], args.include_established)
        protected += prot
        if ok:
            matched.append(e)
    deleted = gone = 0
    if not args.dry_run and matched:
        s = sock()
        try:
            deleted, gone = ctnetlink.delete_entries(s, matched)
        finally:
            s.close()
    s = sock()
    after = sum(1 for _ in ctnetlink.entries_from(ctnetlink.dump_buffers(s)))
    s.close()
    doc = {"schema": 1, "netns": ref.name, "before": before, "matched": len(matched),
           "protected_established": protected, "deleted": deleted, "already_gone": gone, "after": after,
           "dry_run": args.dry_run}
    if getattr(args, "format", "text") == "json":
        emit(doc)
    else:
        print(f"netns {ref.name}: {before} entries before, {len(matched)} matched"
              + (f", {protected} ASSURED ESTABLISHED kept (use --include-established to delete them)"
                 if protected else ""))
        if args.dry_run:
            for e in matched[:10]:
                from ctdoctor.sources.entries import format_entry

                print("  would delete: " + format_entry(e, "default"))
            print(f"dry run: nothing deleted ({len(matched)} would be)")
        else:
            print(f"deleted {deleted}" + (f" ({gone} were already gone)" if gone else "") + f"; {after} after")
    return 0
