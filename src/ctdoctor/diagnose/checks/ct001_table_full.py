"""Table full or nearly full.

What it detects
    A network namespace whose conntrack count is at or near ``nf_conntrack_max``:
    warning at 80 %, critical at 95 % or when it is at 80 % and packets are
    being dropped (the thresholds every command shares; ``CTDOCTOR_FILL_WARNING``
    and ``CTDOCTOR_FILL_CRITICAL`` change them everywhere). Every namespace is
    judged against the one global max.

Why it matters
    At the max the kernel can only make room by evicting entries that are not
    ASSURED (early drop). When there are none near the new flow's hash bucket
    it drops the packet and logs ``nf_conntrack: table full, dropping packet``
    (from 6.18, ``table full in netns N``). New connections then time out while
    established ones keep working, which looks like a flaky network, not a
    full table.

How to fix
    Raise the max now with ``sysctl -w net.netfilter.nf_conntrack_max=N`` (in the
    initial namespace; it is global and read-only inside others) and persist it
    with ``ctdoctor apply --max N``, which also sizes the hash and makes the
    setting survive module reloads. Then find who fills the table with
    ``ctdoctor top --netns NAME`` and ``ctdoctor plan`` for a value sized to RAM.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import (
    CRITICAL,
    WARNING,
    Context,
    Finding,
    Needs,
    NetnsState,
    Unknown,
    apply_hint,
    ev,
    fmt_pct,
    sysctl_fix,
)
from ctdoctor.model import thresholds

CODE = "CT001"
TITLE = "conntrack table full or nearly full"


def recommended_max(count: int, mx: int) -> int:
    # Double the current demand, rounded up to a multiple of 65536: room for growth, not a guess at RAM.
    want = max(2 * count, 2 * mx)
    return ((want + 65535) // 65536) * 65536


def needs(ctx: Context) -> Needs:
    """The listing where no count was captured (it tells how many entries there are at least)."""
    return Needs(listings={st.name for st in ctx.namespaces if st.count is None and st.max})


def needs_after(ctx: Context) -> Needs:
    """The plan's pick, when a table is full enough to report (its fix names it)."""
    return Needs(plan_max=any(_level(ctx, st)[0] is not None for st in ctx.namespaces))


def _count(ctx: Context, st: NetnsState) -> tuple[int | None, str | None]:
    count, count_source = st.count, st.sources.get("count")
    if count is None and st.max:
        # no count captured: a whole listing (not a cut sample) holds at least that many
        s = ctx.summary(st)
        if s is not None and not s.sample and s.listed:
            count, count_source = s.listed, f"{s.source} (entries listed; no nf_conntrack_count captured)"
    return count, count_source


def _level(ctx: Context, st: NetnsState) -> tuple[str | None, bool]:
    """('critical' | 'warning' | None, dropping) of this netns's table."""
    count, _ = _count(ctx, st)
    if count is None or not st.max:
        return None, False
    dropping = ctx.dropping(st) or (st.rates() or {}).get("insert_failed", 0) > 0
    return thresholds.fill_severity(count / st.max, dropping), dropping


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    for st in ctx.namespaces:
        count, count_source = _count(ctx, st)
        if count is None or not st.max:
            yield Unknown(CODE, "not enough data: no nf_conntrack_count/max for this netns", st.name)
            continue
        fill = count / st.max
        drops = st.stats.sums.get("drop") if st.stats else None  # unknown, never 0, without a stats source
        rates = st.rates() or {}
        level, dropping = _level(ctx, st)
        if level is None:
            continue
        sev = CRITICAL if level == "critical" else WARNING
        # the one sizing model (plan's): every netns's peak, the persisted value, the flow rate
        new_max = max(ctx.plan_max(), recommended_max(count, st.max))
        yield Finding(
            CODE, sev, TITLE, netns=st.name,
            summary=f"netns {st.label}: {count} of {st.max} entries ({fmt_pct(fill)})"
                    + (f", dropping {rates.get('drop', 0):g} packets/s" if rates.get("drop") else
                       ", dropping (table full in the kernel log within the hour)" if dropping else ""),
            evidence={"count": ev(count, count_source), "max": ev(st.max, st.sources.get("max")),
                      "fill": round(fill, 4), "drop": ev(drops, st.sources.get("stats")),
                      "drop_per_second": rates.get("drop")},
            explanation=("The table is " + ("full" if fill >= 0.999 else "nearly full") + ". New flows need a free "
                         "entry; the kernel evicts only entries that are not ASSURED and otherwise drops the packet. "
                         "Established connections keep working, new ones time out."
                         + ("" if st.name == "init" else " The max is global: raise it in the initial namespace.")),
            fix=[sysctl_fix("nf_conntrack_max", new_max), apply_hint(f"--max {new_max}"),
                 f"ctdoctor top --netns {st.name} --by src,state   # who fills it"],
        )
