"""Early-drop pressure.

What it detects
    ``early_drop`` counted in ``/proc/net/stat/nf_conntrack`` (or ``conntrack -S``),
    and whether it is rising over the sampling interval. A warning while it rises,
    while the table is under pressure, or when the count since boot is large
    (1,000 or more: the table fills again and again); a few since boot are
    history (information).

Why it matters
    Early drop is how a full table makes room: for a new flow the kernel looks
    at a few hash buckets and evicts an entry that is not ASSURED (an
    unreplied UDP flow, a SYN without answer). Nothing is logged and ``drop``
    stays 0, but flows that were waiting for their first answer lose their
    state: the answer then arrives as a new, unrelated packet (and may be
    dropped by a stateful filter or miss its NAT mapping).

How to fix
    Treat it like a full table (CT001): raise ``nf_conntrack_max`` and find the
    source of unreplied flows with ``ctdoctor top --state UNREPLIED --by
    src,dport``; lower ``nf_conntrack_udp_timeout`` (30 s by default) if unanswered
    UDP dominates.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding, ev

CODE = "CT003"
# Since boot, this many evictions are no single brush with the max: the table fills again and again.
RECURRING = 1000
TITLE = "early-drop pressure: unassured flows evicted"


def run(ctx: Context) -> Iterator[Finding]:
    for st in ctx.namespaces:
        if st.stats is None:
            continue
        n = st.stats.sums.get("early_drop", 0)
        rate = (st.rates() or {}).get("early_drop", 0)
        if not n:
            continue
        # rising now, or a table under pressure: worth attention; a count since boot in a quiet
        # table is history (the table was full once, and made room)
        sev = WARNING if rate > 0 or ctx.under_pressure(st) or n >= RECURRING else INFO
        yield Finding(
            CODE, sev, TITLE, netns=st.name,
            summary=f"netns {st.label}: early_drop {n} since boot" + (f", now {rate:g}/s" if st.interval else ""),
            evidence={"early_drop": ev(n, st.sources.get("stats")), "early_drop_per_second": rate if st.interval
                      else None, "count": st.count, "max": st.max},
            explanation="The table hit its max and made room by silently evicting entries that were not ASSURED "
                        "(no reply seen yet). `drop` stays 0, so this pressure is easy to miss.",
            fix=[f"ctdoctor top --netns {st.name} --state UNREPLIED --by src,dport",
                 "ctdoctor plan   # a max sized for the observed load"],
        )
