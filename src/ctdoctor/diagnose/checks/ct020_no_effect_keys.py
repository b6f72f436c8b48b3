"""Persisted conntrack settings this kernel does not have.

What it detects
    A ``sysctl.conf`` / ``sysctl.d`` line for a conntrack key the running kernel
    does not have: the ``net.ipv4.netfilter.ip_conntrack_*`` names of 2.6-era
    kernels (``ip_conntrack`` and the ``nf_conntrack_ipv4`` compatibility
    sysctls, gone since 4.19) kept on a newer kernel, typically after an
    upgrade or from an old tuning guide.

Why it matters
    ``sysctl --system`` skips a key that does not exist (with an error on the
    console), so the value was never in effect: whoever wrote it believes the
    table is sized or timed as written, and it is not. It is not drift: nothing
    reset it, and "restoring" it would only fail or, mapped to today's name,
    undo a value another tool (kube-proxy) set on purpose.

How to fix
    Rename the key to its ``net.netfilter.nf_conntrack_*`` name if the value is
    still wanted (check the live value first: ``sysctl
    net.netfilter.nf_conntrack_max``), or delete the line.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding
from ctdoctor.model.kernel import parse_int

CODE = "CT020"
TITLE = "persisted conntrack settings this kernel does not have"


def run(ctx: Context) -> Iterator[Finding]:
    stale = ctx.snap.persisted.no_effect
    if not stale:
        return
    rows = []
    worse = False
    for s in stale:
        live = ctx.snap.settings.get(s.key)
        modern_persisted = ctx.snap.persisted.sysctl.get(s.key)
        rows.append({"key": s.raw_key, "value": s.value, "modern_key": s.key, "live": live,
                     "modern_persisted": modern_persisted.value if modern_persisted else None,
                     "source": f"{s.file}:{s.lineno}"})
        # the intended max is bigger than what runs, and no modern line sets it: the table is smaller
        # than its owner thinks
        want, now = parse_int(s.value), parse_int(live)
        if s.key.endswith("nf_conntrack_max") and modern_persisted is None and want and now and want > now:
            fill = max((st.fill or 0) for st in ctx.namespaces) if ctx.namespaces else 0
            worse = worse or fill >= 0.5
    yield Finding(
        CODE, WARNING if worse else INFO, TITLE,
        summary=f"{len(stale)} persisted key(s) do not exist on this kernel ({ctx.snap.release or 'unknown'}) and "
                "were never applied: " + ", ".join(f"{r['key']}={r['value']} ({r['source']})" for r in rows[:3]),
        evidence={"settings": rows},
        explanation="sysctl skips keys the kernel does not have, so these lines have no effect. The modern name "
                    "of each is shown beside it with its live value.",
        fix=[f"sed -i '{s.lineno}s/^/# no such key on this kernel: /' {s.file}" for s in stale],
    )
