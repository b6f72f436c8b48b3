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
    stopped reading.

How to fix
    Find the stuck listener: ``ss -f netlink -p`` lists netlink sockets with
    their process; restart or fix it (conntrackd: check its ``NetlinkBufferSize``
    and that it runs). For NFQUEUE, check the queue's reader
    (``/proc/net/netfilter/nfnetlink_queue``). Set ``net.netfilter.nf_conntrack_events=0``
    only if nothing needs conntrack events.
"""

from ctdoctor import kernel
from ctdoctor.checks.base import WARNING, Finding, Unknown, ev

CODE = "CT004"
TITLE = "nf_conntrack_count is far above the listed entries"


def run(ctx):
    for st in ctx.namespaces:
        if st.count is None:
            continue
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
        gap = st.count - s.listed
        if gap < max(100, 0.05 * st.count):
            continue
        old = kernel.has_unconfirmed_list(ctx.version)
        where = ("the per-CPU unconfirmed list (packets in flight or held in an NFQUEUE) or the per-CPU dying list "
                 "(undelivered destroy events)") if old else \
                ("the ecache dying list (destroy events a ctnetlink listener did not take) or unconfirmed entries "
                 "held by packets queued to userspace (NFQUEUE)")
        yield Finding(
            CODE, WARNING, TITLE, netns=st.name,
            summary=f"netns {st.name}: count {st.count}, but {s.listed} entries listed ({gap} not in the hash)",
            evidence={"count": ev(st.count, st.sources.get("count")), "listed": ev(s.listed, s.source),
                      "gap": gap, "kernel": ctx.snap.release, "events": ctx.setting("nf_conntrack_events", st)},
            explanation=f"{gap} entries are allocated and counted against nf_conntrack_max but are not in the hash "
                        f"table, so no listing shows them. On this kernel ({ctx.snap.release or 'unknown'}) they "
                        f"wait on {where}.",
            fix=["ss -f netlink -p   # find the event listener that stopped reading (conntrackd?)",
                 "cat /proc/net/netfilter/nfnetlink_queue   # queues and their readers, if NFQUEUE is used"],
        )
