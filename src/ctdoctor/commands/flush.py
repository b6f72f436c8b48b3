"""ctdoctor flush: delete entries by state, address or port, over ctnetlink — never ASSURED ESTABLISHED
ones unless asked, because deleting them breaks live connections under a stateful filter or NAT."""

from __future__ import annotations

import os
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

    from ctdoctor.top.tally import label

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
    from ctdoctor.commands.common import check_format

    check_format(args, ("text", "json"))  # --format is refused where it does not apply, never ignored
    import ipaddress

    from ctdoctor.render.jsonout import emit
    from ctdoctor.sources import ctnetlink
    from ctdoctor.sources import netns as nsmod

    states = {s.strip().upper() for s in args.state.split(",") if s.strip()}
    if not states:
        raise UsageError("--state needs at least one state")
    from ctdoctor.model.kernel import check_states

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

    from ctdoctor.listing.accel import accelerated

    if accelerated():
        sel = _select_fast(sock, states, args, ref)
    else:
        sel = _select_python(sock, states, nets, args)
    deleted = gone = 0
    if not args.dry_run and sel.matched:
        s = sock()
        try:
            deleted, gone = sel.delete(s)
        finally:
            s.close()
    after = _count_now(ref) if not args.dry_run else sel.before
    doc = {"schema": 1, "netns": ref.name, "before": sel.before, "matched": sel.matched,
           "protected_established": sel.protected, "deleted": deleted, "already_gone": gone, "after": after,
           "dry_run": args.dry_run, "sample": sel.sample}
    before, protected, matched = sel.before, sel.protected, sel.matched
    if getattr(args, "format", "text") == "json":
        emit(doc)
    else:
        print(f"netns {ref.name}: {before} entries before, {matched} matched"
              + (f", {protected} ASSURED ESTABLISHED kept (use --include-established to delete them)"
                 if protected else ""))
        if args.dry_run:
            for row in sel.sample:
                print(f"  would delete {row['count']:>9,} {row['what']}")
            print(f"dry run: nothing deleted ({matched} of {before} would be)")
        else:
            print(f"deleted {deleted}" + (f" ({gone} were already gone)" if gone else "") + (f"; {after} after" if after is not None else ""))
    return 0


class _Selection:
    """What a flush matched: counts, a sample of the most common groups, and how to delete them."""

    def __init__(self, before: int, matched: int, protected: int, sample: list[dict], delete):
        self.before, self.matched, self.protected, self.sample, self.delete = (before, matched, protected,
                                                                              sample, delete)


def _select_fast(sock, states, args, ref) -> _Selection:
    """One dump through the C decoder: the same filters as top's, CT_DELETE requests built from the
    dump's own attributes (no entry ever becomes a Python object)."""
    from ctdoctor.listing._fastscan import netlink_select
    from ctdoctor.sources import ctnetlink
    from ctdoctor.top.tally import parse_query, rows

    q = parse_query("proto,dport", None if "ALL" in states else ",".join(sorted(states)), None,
                    args.port, args.src, args.dst)
    agg = q.aggregator()
    before = matched = protected = 0
    parts: list[bytes] = []
    s = sock()
    try:
        for buf in ctnetlink.dump_buffers(s):
            n, m, p, _bad, done, req = netlink_select(agg, buf, not args.include_established, matched + 1,
                                                      ctnetlink.ACK_EVERY)
            before, matched, protected = before + n, matched + m, protected + p
            parts.append(req)
            if done:
                break
    except OSError as e:
        raise ctnetlink.CtnetlinkError(f"ctnetlink dump failed: {e.strerror or e}") from None
    finally:
        s.close()
    from ctdoctor.top.tally import Tally

    _groups, rs = rows(Tally(q, agg, matched), q, 10)
    sample = [{"count": r["count"], "what": _what(r["key"], r.get("states") or {})} for r in rs]
    requests = b"".join(parts)
    return _Selection(before, matched, protected, sample,
                      lambda sk: ctnetlink.send_deletes(sk, requests, progress=_progress(matched)))


def _progress(total: int):
    """Deleted so far, on stderr, when it is a terminal and the job is big enough to wait for."""
    import sys

    if total < 100_000 or not sys.stderr.isatty():
        return None

    def show(done: int, of: int) -> None:
        print(f"\rdeleting: {done:,} of {of:,}", end="" if done < of else "\n", file=sys.stderr, flush=True)

    return show


def _what(key: dict, states: dict) -> str:
    """``udp port 53 (UNREPLIED 29,000, ...)``: a group of the entries a flush matches."""
    port = f" port {key['dport']}" if key.get("dport") else ""
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(states.items(), key=lambda kv: -kv[1])[:3])
    return f"{key.get('proto')}{port}" + (f" ({mix})" if mix else "")


def _select_python(sock, states, nets, args) -> _Selection:
    """Without the C extension: every entry decoded in Python (slower, the same result)."""
    from ctdoctor.sources import ctnetlink

    s = sock()
    try:
        entries = list(ctnetlink.entries_from(ctnetlink.dump_buffers(s)))
    finally:
        s.close()
    matched, protected = [], 0
    for e in entries:
        ok, prot = _matches(e, states, args.port, nets["src"], nets["dst"], args.include_established)
        protected += prot
        if ok:
            matched.append(e)
    from ctdoctor.top.tally import label

    groups: dict[tuple, dict[str, int]] = {}
    for e in matched:
        mix = groups.setdefault((e.proto, e.orig.dport), {})
        lab = label(e)
        mix[lab] = mix.get(lab, 0) + 1
    top = sorted(groups.items(), key=lambda kv: (-sum(kv[1].values()), str(kv[0])))[:10]
    sample = [{"count": sum(mix.values()), "what": _what({"proto": p, "dport": d}, mix)} for (p, d), mix in top]
    return _Selection(len(entries), len(matched), protected, sample,
                      lambda sk: ctnetlink.delete_entries(sk, matched))


def _count_now(ref) -> int | None:
    """The netns's nf_conntrack_count now (one small file, not another dump)."""
    from ctdoctor.sources import netns as nsmod

    try:
        fd = nsmod.open_in(ref, "/proc/sys/net/netfilter/nf_conntrack_count")
    except OSError:
        return None
    try:
        return int(os.read(fd, 64) or b"0")
    except ValueError:
        return None
    finally:
        os.close(fd)
