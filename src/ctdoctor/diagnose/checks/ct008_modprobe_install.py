"""modprobe.d configuration that stops conntrack from ever loading.

What it detects
    ``install nf_conntrack /bin/true`` (or ``/bin/false``, ``/usr/bin/true``,
    ``/bin/sh -c true``...) in ``/etc/modprobe.d`` and the other modprobe.d
    directories, for ``nf_conntrack``, ``nf_conntrack_ipv4``/``ipv6``,
    ``nf_defrag_ipv4``/``ipv6`` or ``nf_nat``; and ``blacklist`` of them.

Why it matters
    It is often written as a "guard" against unloading, but ``install`` replaces
    the *load* command: from the next boot (or the next unload) the module can
    never be loaded again, so conntrack and NAT are gone and the NAT and state
    rules silently stop working (CT005). Critical when such rules exist (a
    warning when the rules could not be read, information when none needs
    conntrack or conntrack is built into the kernel, where modprobe never runs).
    ``blacklist`` stops loading by alias, which is how netfilter asks for it.

How to fix
    Remove the line. To stop ``modprobe -r`` from unloading it, use
    ``remove nf_conntrack /bin/false`` instead; to load it at boot, list it in
    ``/etc/modules-load.d/``; to stop the iptables service unloading it, set
    ``IPTABLES_MODULES_UNLOAD="no"``. ``ctdoctor apply`` writes the
    modules-load.d entry.
"""

import re
from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING, Context, Finding

CODE = "CT008"
TITLE = "modprobe.d stops conntrack from loading"
MODULES = {"nf_conntrack", "nf_conntrack_ipv4", "nf_conntrack_ipv6", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_nat"}
NOOP = re.compile(r"^(/usr)?/bin/(true|false)\b|^(/usr)?/bin/(ba)?sh\s+-c\s+['\"]?(true|false|exit)")


def run(ctx: Context) -> Iterator[Finding]:
    bad = [d for d in ctx.snap.persisted.modprobe
           if d.module in MODULES and ((d.verb == "install" and NOOP.search(d.args)) or d.verb == "blacklist")]
    if not bad:
        return
    rules = ctx.snap.namespaces[0].rules if ctx.snap.namespaces else None
    needed = bool(rules and (rules.nat or rules.nat_chains or rules.ct_state))
    installs = [d for d in bad if d.verb == "install"]
    builtin = ctx.builtin_tracker()
    if builtin:
        sev = INFO  # nothing is loaded by modprobe: the line can never act
    elif rules is None or not rules.seen:
        sev = WARNING  # cannot tell what it would break
    elif needed:
        sev = CRITICAL if installs else WARNING
    else:
        sev = INFO
    yield Finding(
        CODE, sev, TITLE,
        summary="; ".join(f"{d.file}:{d.lineno}: {d.verb} {d.module} {d.args}".rstrip() for d in bad)
                + (" — NAT/state rules depend on it" if needed else "")
                + (" (conntrack is built into this kernel: the line has no effect)" if builtin else
                   " (no NAT or state rule needs conntrack now)" if rules is not None and rules.seen and not needed
                   else ""),
        evidence={"lines": [{"file": d.file, "line": d.lineno, "text": f"{d.verb} {d.module} {d.args}".rstrip()}
                            for d in bad],
                  "nat_or_state_rules": needed},
        explanation=("`install MODULE /bin/true` does not prevent unloading: it replaces loading, so the module can "
                     "never be loaded again. After the next reboot or unload, conntrack and NAT are gone and every "
                     "NAT and state rule silently stops working." if installs else
                     "`blacklist` stops the module from being loaded by alias, which is how netfilter requests it."),
        fix=[f"sed -i '{d.lineno}s/^/# disabled by ctdoctor advice: /' {d.file}" for d in bad]
        + ["echo 'remove nf_conntrack /bin/false' > /etc/modprobe.d/ctdoctor-keep.conf   # blocks modprobe -r only",
           "ctdoctor apply   # lists nf_conntrack in /etc/modules-load.d/ctdoctor.conf"],
    )
