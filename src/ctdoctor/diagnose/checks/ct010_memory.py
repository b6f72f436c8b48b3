"""Memory that the configured max can cost.

What it detects
    ``nf_conntrack_max`` × the entry size (the ``nf_conntrack`` slab's object
    size from ``/proc/slabinfo``, else an estimate that says so) plus the bucket
    array, against MemTotal: information above 25 % of RAM, a warning above
    50 % (a risk to memory, not lost traffic: never critical).

Why it matters
    A huge max is not free: a full table takes that memory from the kernel's
    unreclaimable slab, and a flood can drive the host into OOM. The opposite
    mistake (a max far below what RAM allows) is what ``ctdoctor plan`` is for.

How to fix
    Size the max to the load and memory: ``ctdoctor plan --memory-budget 10%``,
    then ``ctdoctor apply --from-plan``.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding, Unknown, ev

CODE = "CT010"
TITLE = "the configured max can take too much memory"


def human(n: float) -> str:
    for u in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {u}"
        n /= 1024
    return f"{n:.1f} PiB"


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    mx, buckets, ram = ctx.setting("nf_conntrack_max"), ctx.setting("nf_conntrack_buckets"), ctx.snap.mem_total
    if not mx or not ram:
        yield Unknown(CODE, "not enough data: need nf_conntrack_max and MemTotal")
        return
    size, estimated = ctx.entry_size()
    cost = mx * size + (buckets or 0) * 8
    share = cost / ram
    if share < 0.25:
        return
    yield Finding(
        CODE, WARNING if share >= 0.5 else INFO, TITLE,
        summary=f"a full table ({mx} entries × {size} B{' (estimated)' if estimated else ''}) would take "
                f"{human(cost)}, {share * 100:.0f}% of RAM ({human(ram)})",
        evidence={"max": ev(mx, ctx.setting_source("nf_conntrack_max")),
                  "entry_size": ev(size, ctx.snap.entry_size_source or "estimate"),
                  "bytes_when_full": cost, "mem_total": ev(ram, "/proc/meminfo"), "share": round(share, 3)},
        explanation="Conntrack entries live in unreclaimable kernel memory. A flood that fills the table takes "
                    "this memory away from everything else.",
        fix=["ctdoctor plan --memory-budget 10%", "ctdoctor apply --from-plan"],
    )
