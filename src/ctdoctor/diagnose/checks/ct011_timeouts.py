"""Timeouts that keep dead flows, against the observed state mix.

What it detects
    A state that holds a large share of a busy table (≥ 30 % of the entries,
    table ≥ 50 % full; a warning only under pressure: at the warning fill or
    dropping) while its timeout is long: ESTABLISHED with
    ``nf_conntrack_tcp_timeout_established`` above a day (default 5 days),
    TIME_WAIT above 60 s (default 120 s), CLOSE_WAIT above 60 s, SYN_SENT above
    60 s, unreplied UDP with ``nf_conntrack_udp_timeout`` above 30 s.

Why it matters
    An entry lives until its timeout even after both ends forgot the
    connection. A peer that vanished without FIN or RST leaves an ESTABLISHED
    entry for 5 days; short connections leave TIME_WAIT entries for 2 minutes.
    With a busy table these dead entries are what fills it.

How to fix
    Lower the timeout of the dominating state, e.g.
    ``sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=86400`` (what
    kube-proxy sets) or ``..._time_wait=30``, and persist with ``ctdoctor apply
    --timeout tcp_timeout_established=86400``.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import (
    INFO,
    WARNING,
    Context,
    Finding,
    Needs,
    Unknown,
    apply_hint,
    ev,
    sysctl_fix,
)

CODE = "CT011"
TITLE = "timeouts keep dead flows in a busy table"

# state label -> (sysctl short name, threshold above which it is "long", suggested value)
RULES = {
    "ESTABLISHED": ("nf_conntrack_tcp_timeout_established", 86400, 86400),
    "TIME_WAIT": ("nf_conntrack_tcp_timeout_time_wait", 60, 30),
    "CLOSE_WAIT": ("nf_conntrack_tcp_timeout_close_wait", 60, 60),
    "SYN_SENT": ("nf_conntrack_tcp_timeout_syn_sent", 60, 30),
    "UNREPLIED": ("nf_conntrack_udp_timeout", 30, 30),
}


def needs(ctx: Context) -> Needs:
    """The listing of every netns at least half full."""
    return Needs(listings={st.name for st in ctx.namespaces if st.fill is not None and st.fill >= 0.5})


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    for st in ctx.namespaces:
        if st.fill is None or st.fill < 0.5:
            continue
        s = ctx.summary(st)
        if s is None:
            yield Unknown(CODE, "not enough data: " + ctx.summary_missing_reason(st), st.name)
            continue
        if not s.listed:
            continue
        for label, (key, limit, suggest) in RULES.items():
            n = s.states.get(label, 0)
            share = n / s.listed
            timeout = ctx.setting(key, st)
            if share < 0.3 or timeout is None or timeout <= limit:
                continue
            short = key.removeprefix("nf_conntrack_")
            yield Finding(
                CODE, WARNING if ctx.under_pressure(st) else INFO, TITLE, netns=st.name,
                summary=f"netns {st.label}: {label} holds {share * 100:.0f}% of a {st.fill * 100:.0f}% full table "
                        f"and lives {timeout} s ({key})",
                evidence={"state": label, "entries": n, "listed": ev(s.listed, s.source), "share": round(share, 3),
                          "timeout": ev(timeout, ctx.setting_source(key, st)), "fill": round(st.fill, 3)},
                explanation=f"Entries in {label} stay {timeout} s after their last packet, also for connections both "
                            "ends have forgotten. In a busy table they crowd out new flows.",
                fix=[sysctl_fix(key, suggest), apply_hint(f"--timeout {short}={suggest}")],
            )
