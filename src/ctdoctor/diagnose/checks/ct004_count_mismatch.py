"""The count disagrees with the listed entries.

What it detects
    ``nf_conntrack_count`` well above the number of entries
    ``/proc/net/nf_conntrack`` (or a ctnetlink dump) lists for the same
    namespace: more than 5 % and at least 100 apart.

Why it matters
    The count covers every allocated entry; the listing shows only the ones in
    the hash table. Entries outside the hash still count against
    ``nf_conntrack_max``, so a table can be "full" while the listing looks half
    empty. Where they are depends on the kernel:

    - before 5.19: the per-CPU *unconfirmed* list (packets in flight, or held
      in an NFQUEUE nobody reads) and the per-CPU *dying* list (entries whose
      destroy event could not be delivered);
    - from 5.19: the unconfirmed and per-CPU dying lists are gone; entries
      whose destroy event is undelivered wait on the netns's ecache dying list,
      and packets queued to userspace (NFQUEUE) still hold their unconfirmed
      entry.

    The usual cause of a large gap is a ctnetlink event listener asking for
    reliable delivery (conntrackd, or a tool with NETLINK_BROADCAST_ERROR) that
    stopped reading; live, the finding names the process holding each
    conntrack event socket (pid, comm) and its unread bytes.

    Not every gap is stuck entries. Expired entries stay in the count until the
    garbage collector reaches them (every ~10 s with 10 s timeouts, ~18 s at
    30 s, up to ~60 s when other namespaces hold long-lived entries), and
    reading the table frees the expired entries it passes: 2,000 expired UDP
    entries read as count 2,000 and 0 listed, then count 0. So the live count
    is read again right after the listing and compared with that; offline, the
    collector's possible backlog (the entries of short-lived states, by their
    timeouts, over half of a 61 s period) is allowed for. Only a gap beyond it
    is reported.

How to fix
    Find the stuck listener: ``ss -f netlink -p`` lists netlink sockets with
    their process; restart or fix it (conntrackd: check its ``NetlinkBufferSize``
    and that it runs). For NFQUEUE, check the queue's reader
    (``/proc/net/netfilter/nfnetlink_queue``). Set ``net.netfilter.nf_conntrack_events=0``
    only if nothing needs conntrack events.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import WARNING, Context, Finding, ListingSummary, Needs, NetnsState, Unknown, ev
from ctdoctor.model import kernel

CODE = "CT004"
TITLE = "nf_conntrack_count is far above the listed entries"


# state label -> the timeout that ends it (the garbage collector's backlog is by these)
STATE_TIMEOUT = {
    "TIME_WAIT": "nf_conntrack_tcp_timeout_time_wait", "SYN_SENT": "nf_conntrack_tcp_timeout_syn_sent",
    "SYN_RECV": "nf_conntrack_tcp_timeout_syn_recv", "FIN_WAIT": "nf_conntrack_tcp_timeout_fin_wait",
    "CLOSE_WAIT": "nf_conntrack_tcp_timeout_close_wait", "LAST_ACK": "nf_conntrack_tcp_timeout_last_ack",
    "CLOSE": "nf_conntrack_tcp_timeout_close", "UNREPLIED": "nf_conntrack_udp_timeout",
    "REPLIED": "nf_conntrack_udp_timeout", "ASSURED": "nf_conntrack_udp_timeout_stream",
}
GC_PERIOD_MAX = 61.0  # seconds: the slowest full pass measured (long-lived entries elsewhere on the host)


def gc_backlog(ctx: Context, st: NetnsState, states: dict[str, int]) -> int:
    """Expired entries the garbage collector may not have reached yet: each short-lived state's entries
    expire at n / T per second and wait up to half a period, so at most n × (P/2) / T of them."""
    total = 0.0
    for label, n in states.items():
        key = STATE_TIMEOUT.get(label)
        t = ctx.setting(key, st) if key else None
        if t:
            total += n * min(1.0, (GC_PERIOD_MAX / 2) / t)
    return int(total)


def needs(ctx: Context) -> Needs:
    """The listing of every netns with a count of 100 or more."""
    return Needs(listings={st.name for st in ctx.namespaces if st.count is not None and st.count >= 100})


def needs_after(ctx: Context) -> Needs:
    """The event listeners of each live netns with a gap to report (its evidence names them)."""
    if not ctx.live:
        return Needs()
    out = Needs()
    for st in ctx.namespaces:
        s = ctx.summary(st) if st.count is not None and st.count >= 100 else None
        if s is not None and not s.sample and s.families == "all" and _gap(ctx, st, s) is not None:
            out.listeners.add(st.name)
    return out


def _gap(ctx: Context, st: NetnsState, s: ListingSummary) -> tuple[int, int, int] | None:
    """(count, gap, allowance) when the count is that far above the listing, else None."""
    count = s.count_after if s.count_after is not None else (st.count or 0)
    gap = count - s.listed
    if s.count_after is not None:
        # entries born while the table was read
        allowance = int((st.rates() or {}).get("insert", 0) * (s.read_seconds or 0))
    else:
        allowance = gc_backlog(ctx, st, s.states)
    if gap < max(100, 0.05 * count) + allowance:
        return None
    return count, gap, allowance


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    for st in ctx.namespaces:
        if st.count is None or st.count < 100:
            continue  # a gap of 100 or more needs a count of 100 or more
        s = ctx.summary(st)
        if s is None:
            yield Unknown(CODE, "not enough data: " + ctx.summary_missing_reason(st), st.name)
            continue
        if s.sample:
            yield Unknown(CODE, "not enough data: the saved listing is cut (a sample), it cannot be compared "
                                "with the count", st.name)
            continue
        if s.families != "all":
            yield Unknown(CODE, f"not enough data: the listing ({s.tool or s.source}) covers {s.families} only "
                                "(conntrack -L without -f before conntrack-tools 1.4.7); the count covers every "
                                "family", st.name)
            continue
        got = _gap(ctx, st, s)
        if got is None:
            continue
        count, gap, allowance = got
        yield _finding(ctx, st, s, count, gap, allowance)


def _finding(ctx: Context, st: NetnsState, s: ListingSummary, count: int, gap: int, allowance: int) -> Finding:
    old = kernel.has_unconfirmed_list(ctx.version)
    where = ("the per-CPU unconfirmed list (packets in flight or held in an NFQUEUE) or the per-CPU dying list "
             "(undelivered destroy events)") if old else \
            ("the ecache dying list (destroy events a ctnetlink listener did not take) or unconfirmed entries "
             "held by packets queued to userspace (NFQUEUE)")
    listeners = ctx.event_listeners(st) if ctx.live else []
    stuck = [lst for lst in listeners if lst["unread_bytes"] or lst["drops"]]
    who = "; ".join(f"pid {lst.get('pid', '?')} ({lst.get('comm') or 'unknown process'}): "
                    f"{lst['unread_bytes']} bytes unread" for lst in (stuck or listeners)[:3])
    return Finding(
        CODE, WARNING, TITLE, netns=st.name,
        summary=f"netns {st.label}: count {count}, but {s.listed} entries listed ({gap} not in the hash)"
                + (f"; conntrack event listener {who}" if who else ""),
        evidence={"count": ev(count, _count_source(st, s)),
                  "count_before_listing": st.count, "listed": ev(s.listed, s.source),
                  "gap": gap, "gc_allowance": allowance, "kernel": ctx.snap.release,
                  "events": ctx.setting("nf_conntrack_events", st), "event_listeners": listeners[:10]},
        explanation=f"{gap} entries are allocated and counted against nf_conntrack_max but are not in the hash "
                    f"table, so no listing shows them. On this kernel ({ctx.snap.release or 'unknown'}) they "
                    f"wait on {where}." + (" The garbage collector's lag is not it: the count was read again after "
                                           "the listing, which frees expired entries." if s.count_after is not None
                                           else f" Up to {allowance} of them could be expired entries the garbage "
                                                "collector had not reached; the gap is larger than that."),
        fix=["ss -f netlink -p   # find the event listener that stopped reading (conntrackd?)",
             "cat /proc/net/netfilter/nfnetlink_queue   # queues and their readers, if NFQUEUE is used"],
    )


def _count_source(st: NetnsState, s: ListingSummary) -> str | None:
    src = st.sources.get("count")
    if not src:
        return None
    return src + (" (read after the listing)" if s.count_after is not None else "")
