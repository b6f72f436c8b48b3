"""Hash table sizing.

What it detects
    The ratio of ``nf_conntrack_max`` to ``nf_conntrack_buckets`` (the average
    chain length when the table is full; each entry is hashed twice, once per
    direction) above 4 (information; a warning above 8 only when a table is
    under pressure: at the warning fill or dropping), and the ``chainlength``
    counter (``chaintoolong`` in ``conntrack -S``, 5.15+), which counts inserts
    refused because a bucket's chain was too long (a warning while it rises or
    the table is under pressure). A ratio of 8 is the kernel's own choice when
    ``hashsize=`` was given; a table holding a few entries walks short chains
    whatever the ratio.

Why it matters
    Every packet walks one chain. Before 5.15 the kernel chose max = 4 ×
    buckets; from 5.15 max = buckets; raising only the max (the usual fix for a
    full table) makes chains long and lookups slow. From 5.15 a chain longer
    than the limit makes the insert fail: the packet is dropped.

How to fix
    Set buckets with the max: ``sysctl -w net.netfilter.nf_conntrack_buckets=N``
    (writable in the initial netns on current kernels), or ``options
    nf_conntrack hashsize=N`` in modprobe.d for the next load. ``ctdoctor apply
    --max M --buckets N`` does both.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding, apply_hint, ev, sysctl_fix

CODE = "CT009"
TITLE = "hash sizing: max/buckets ratio and chains too long"


def run(ctx: Context) -> Iterator[Finding]:
    mx, buckets = ctx.setting("nf_conntrack_max"), ctx.setting("nf_conntrack_buckets")
    chain = sum((st.stats.sums.get("chainlength", 0) for st in ctx.namespaces if st.stats
                 and "chainlength" in st.stats.columns), 0)
    rising = any((st.rates() or {}).get("chainlength", 0) > 0 for st in ctx.namespaces)
    pressure = any(ctx.under_pressure(st) for st in ctx.namespaces)
    if mx and buckets:
        ratio = mx / buckets
        if ratio > 4:
            want = max(1 << max(0, (mx - 1).bit_length()), 1024)  # a power of two >= max
            yield Finding(
                CODE, WARNING if ratio > 8 and pressure else INFO, TITLE,
                summary=f"nf_conntrack_max {mx} over {buckets} buckets: {ratio:.1f} entries per bucket when full",
                evidence={"max": ev(mx, ctx.setting_source("nf_conntrack_max")),
                          "buckets": ev(buckets, ctx.setting_source("nf_conntrack_buckets")), "ratio": round(ratio, 2)},
                explanation="Each lookup walks a bucket's chain; a full table at this ratio makes chains long. "
                            "Raising the max without the buckets is the usual cause.",
                fix=[sysctl_fix("nf_conntrack_buckets", want), apply_hint(f"--max {mx} --buckets {want}")],
            )
    if chain:
        yield Finding(
            CODE, WARNING if rising or pressure else INFO, "inserts refused: hash chains too long",
            summary=f"chainlength/chaintoolong counter is {chain}: inserts failed because a chain was too long",
            evidence={"chaintoolong": chain},
            explanation="From 5.15 the kernel refuses an insert when a bucket's chain exceeds its limit; the packet "
                        "is dropped. Too few buckets for the entries, or many entries hashing alike.",
            fix=[sysctl_fix("nf_conntrack_buckets", max(buckets or 0, 1024) * 2) if buckets else
                 "ctdoctor plan"],
        )
