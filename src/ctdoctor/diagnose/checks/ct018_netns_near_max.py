"""A non-initial network namespace near the global max.

What it detects
    A container, pod or other non-initial network namespace whose own count
    is at 80 % or more of the global ``nf_conntrack_max`` (critical at 95 % or
    when it drops).

Why it matters
    Every namespace has its own table but shares the one limit. A single pod
    (a busy proxy, a DNS cache, a scanner) can reach the max on its own and
    drop packets while the host's table looks empty: ``conntrack -L`` on the
    host, node_exporter's ``nf_conntrack_entries`` and ``conntrack -C`` all
    show only the initial namespace. Inside the namespace the max is
    read-only: it can only be raised on the host.

How to fix
    Raise ``nf_conntrack_max`` on the host (``ctdoctor apply --max N``), find the
    workload with ``ctdoctor top --netns NAME``, and watch every namespace
    (``ctdoctor status --netns all``, the exporter's per-netns metrics).
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import (
    CRITICAL,
    WARNING,
    Context,
    Finding,
    Needs,
    NetnsState,
    apply_hint,
    ev,
    fmt_pct,
)
from ctdoctor.diagnose.checks.ct001_table_full import recommended_max
from ctdoctor.model import thresholds

CODE = "CT018"
TITLE = "a non-initial network namespace is near the global max"


def needs(ctx: Context) -> Needs:
    """The plan's pick, when a namespace is full enough to report (its fix names it)."""
    return Needs(plan_max=any(_level(ctx, st) is not None for st in ctx.namespaces))


def _level(ctx: Context, st: NetnsState) -> str | None:
    if st.name == "init" or st.count is None or not st.max:
        return None
    return thresholds.fill_severity(st.count / st.max, ctx.dropping(st))


def run(ctx: Context) -> Iterator[Finding]:
    for st in ctx.namespaces:
        level = _level(ctx, st)
        if level is None or st.count is None or not st.max:
            continue
        fill = st.count / st.max
        init = ctx.snap.init
        yield Finding(
            CODE, CRITICAL if level == "critical" else WARNING, TITLE, netns=st.name,
            summary=f"netns {st.label}{'' if st.pod else ' (' + (st.owner or 'no owner') + ')'}: {st.count} of the global max {st.max} "
                    f"({fmt_pct(fill)})" + (f"; the host's own table has {init.count}" if init and
                                            init.count is not None else ""),
            evidence={"count": ev(st.count, st.sources.get("count")), "max": ev(st.max, st.sources.get("max")),
                      "inode": st.inode, "owner": st.owner,
                      "init_count": init.count if init else None},
            explanation="Each namespace counts its own entries against the one global max. Tools that look at the "
                        "host's table (conntrack -C, node_exporter) do not see this one filling up.",
            fix=[f"ctdoctor top --netns {st.name} --by src,dport",
                 (f"sysctl -w net.netfilter.nf_conntrack_max={_target(ctx, st)}"
                 "   # in the host's netns: the max is global, read-only inside this one"),
                 apply_hint(f"--max {_target(ctx, st)}")],
        )


def _target(ctx: Context, st: NetnsState) -> int:
    return max(ctx.plan_max(), recommended_max(st.count or 0, st.max or 0))
