"""NAT rules present but conntrack or NAT not loaded.

What it detects
    NAT rules (iptables ``-j DNAT/SNAT/MASQUERADE/REDIRECT``, an nft chain of type
    ``nat`` or ``dnat``/``snat``/``masquerade`` statements) in the live rule set
    or in the saved rules (``/etc/sysconfig/iptables``), while ``nf_conntrack``
    or ``nf_nat`` is not in the kernel.

Why it matters
    NAT is done by conntrack: without it the NAT rules are never consulted.
    Nothing errors; translated traffic simply stops (published services
    unreachable, masqueraded clients without Internet). This is what happens
    after the conntrack modules were unloaded (``modprobe -r``, ``service iptables
    stop`` with ``IPTABLES_MODULES_UNLOAD=yes``) and the rules were restored
    without them, or when modprobe.d prevents loading (CT008).

How to fix
    ``ctdoctor recover`` loads what this kernel needs in order (``nf_defrag_ipv4``,
    ``nf_conntrack``, ``nf_conntrack_ipv4`` before 4.19, ``nf_nat``) and re-applies
    the persisted settings. By hand: ``modprobe nf_conntrack && modprobe nf_nat``,
    then ``sysctl --system``, then reload the firewall.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import CRITICAL, Context, Finding, Unknown
from ctdoctor.diagnose.checks.ct008_modprobe_install import NOOP
from ctdoctor.model import kernel
from ctdoctor.model.modules import ModuleState

CODE = "CT005"
TITLE = "NAT rules without conntrack or NAT in the kernel: NAT silently broken"


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    rules = ctx.snap.namespaces[0].rules if ctx.snap.namespaces else None
    nat = (rules.nat + rules.nat_chains) if rules else []
    partial = ctx.rules_partial()
    if partial:
        yield Unknown(CODE, f"not enough data: sos stopped its {partial} plugin (timed out, sos_logs/ui.log): the "
                            "firewall rules it captured are incomplete")
        return
    if not rules or not rules.seen:
        yield Unknown(CODE, "not enough data: no firewall rules were readable")
        return
    if not nat:
        return
    # 2.6-era kernels track with ip_conntrack and translate with ip_nat: those count as loaded
    ct, natmod = ctx.tracker_state(), ctx.nat_state()
    missing = [m for m, s in (("nf_conntrack", ct), ("nf_nat", natmod)) if s == ModuleState.ABSENT]
    if kernel.has_per_l3_modules(ctx.version) and ctx.module_state("nf_conntrack_ipv4") == ModuleState.ABSENT \
            and ctx.module_state("ip_conntrack") != ModuleState.LOADED and ct != ModuleState.BUILTIN:
        missing.append("nf_conntrack_ipv4")
    if not missing:
        if ct == ModuleState.UNKNOWN:
            yield Unknown(CODE, "not enough data: no module list to tell whether conntrack is loaded")
        return
    load = ["nf_defrag_ipv4", "nf_conntrack"] + (["nf_conntrack_ipv4"] if kernel.has_per_l3_modules(ctx.version)
                                                 else []) + ["nf_nat"]
    reload = {"rhel": "systemctl restart iptables   # or firewalld: firewall-cmd --reload",
              "debian": "netfilter-persistent reload   # or: systemctl restart nftables"}.get(
        ctx.distro(), "# then reload the firewall rules (iptables-restore or nft -f, as this host loads them)")
    # a modprobe.d trap (CT008) would make every load below a silent no-op: it goes first
    traps = [f"sed -i '{d.lineno}s/^/# disabled by ctdoctor advice: /' {d.file}   # first: {d.verb} {d.module}"
             for d in ctx.snap.persisted.modprobe
             if d.module in load and ((d.verb == "install" and NOOP.search(d.args)) or d.verb == "blacklist")]
    yield Finding(
        CODE, CRITICAL, TITLE,
        summary=f"{len(nat)} NAT rule(s) but {', '.join(missing)} not loaded",
        evidence={"nat_rules": nat[:5], "rule_sources": rules.sources, "missing_modules": missing,
                  "modules_source": ctx.snap.modules_source},
        explanation="NAT rules are evaluated only for connections conntrack tracks; with the module gone they do "
                    "nothing and translated traffic stops without any error.",
        fix=[*traps, "ctdoctor recover   # loads " + ", ".join(load) + ", re-applies settings, verifies",
             " && ".join(f"modprobe {m}" for m in load) + " && sysctl --system", reload],
    )
