"""The firewall service unloads conntrack without re-applying its sysctls.

What it detects
    ``/etc/sysconfig/iptables-config`` (or ``ip6tables-config``, RHEL family) with
    ``IPTABLES_MODULES_UNLOAD="yes"`` (also the default when the key is absent)
    while ``IPTABLES_SYSCTL_LOAD_LIST`` does not name ``.nf_conntrack``.
    A warning only when there is something to lose: conntrack settings are
    persisted (``sysctl.d``) that a reload would reset; critical when the max
    has already drifted. With nothing persisted, or a built-in conntrack that
    no service can unload, it is information.

Why it matters
    ``service iptables restart`` (or ``stop``) then unloads ``nf_conntrack``; the
    next rule load brings the module back with its defaults, and
    ``nf_conntrack_max`` and the timeouts silently return to the kernel default
    (CT006). On a busy gateway the smaller default table fills within minutes.

How to fix
    Either keep the modules loaded (``IPTABLES_MODULES_UNLOAD="no"``) or let the
    init script re-apply them (``IPTABLES_SYSCTL_LOAD_LIST=".nf_conntrack"``).
    ``ctdoctor apply`` sets the latter where the file exists; the udev rule it
    installs covers every other way the module gets reloaded.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING, Context, Finding
from ctdoctor.model.drift import drift as settings_drift
from ctdoctor.model.kernel import NF

CODE = "CT007"
TITLE = "unload hazard: firewall service unloads conntrack without re-applying sysctls"


def run(ctx: Context) -> Iterator[Finding]:
    cfgs = ctx.snap.persisted.iptables_config
    drift_max = any(d["key"].endswith("nf_conntrack_max") for d in settings_drift(ctx.snap))
    builtin = ctx.builtin_tracker()
    at_stake = sorted(k for k in ctx.snap.persisted.sysctl if k.startswith(NF) and not k.endswith("_count"))
    for path, cfg in cfgs.items():
        unload = cfg.get("IPTABLES_MODULES_UNLOAD", cfg.get("IP6TABLES_MODULES_UNLOAD", "yes")).lower()
        load_list = cfg.get("IPTABLES_SYSCTL_LOAD_LIST", cfg.get("IP6TABLES_SYSCTL_LOAD_LIST", ""))
        if unload != "yes" or "nf_conntrack" in load_list or "net.netfilter" in load_list:
            continue
        explicit = "IPTABLES_MODULES_UNLOAD" in cfg or "IP6TABLES_MODULES_UNLOAD" in cfg
        rules = ctx.snap.init.rules if ctx.snap.init else None
        nat = bool(rules and (rules.nat or rules.nat_chains))
        unknown_rules = rules is None or not rules.seen
        # at stake at the next restart: persisted settings reset to defaults, NAT mappings lost with the
        # table; unknown when the rules were not captured
        sev = INFO if builtin or not (at_stake or nat or unknown_rules) else CRITICAL if drift_max else WARNING
        yield Finding(
            CODE, sev, TITLE,
            summary=f"{path}: IPTABLES_MODULES_UNLOAD=\"yes\"{'' if explicit else ' (the default)'} and no "
                    "IPTABLES_SYSCTL_LOAD_LIST=\".nf_conntrack\""
                    + ("; nf_conntrack_max has already drifted (CT006)" if drift_max else "")
                    + ("; conntrack is built into this kernel, so nothing is unloaded" if builtin else
                       f"; a reload would reset {len(at_stake)} persisted setting(s)" if at_stake else
                       "; a reload empties the table: NAT mappings of open connections are lost" if nat else
                       "; the rules were not captured: what a reload breaks is unknown" if unknown_rules else
                       "; no conntrack setting is persisted and no NAT rule: a reload loses little"),
            evidence={"file": path, "IPTABLES_MODULES_UNLOAD": unload,
                      "IPTABLES_SYSCTL_LOAD_LIST": load_list or None, "max_drifted": drift_max,
                      "persisted_settings": at_stake, "builtin": builtin},
            explanation="A restart or stop of the iptables service unloads nf_conntrack; it comes back with kernel "
                        "defaults, and nothing re-applies /etc/sysctl.d.",
            fix=[f"sed -i 's/^#\\?IPTABLES_SYSCTL_LOAD_LIST=.*/IPTABLES_SYSCTL_LOAD_LIST=\".nf_conntrack\"/' {path}",
                 f"# or keep the modules loaded: IPTABLES_MODULES_UNLOAD=\"no\" in {path}",
                 "ctdoctor apply   # sets IPTABLES_SYSCTL_LOAD_LIST and installs the udev re-apply rule"],
        )
