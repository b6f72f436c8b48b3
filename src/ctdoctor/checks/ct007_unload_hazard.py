"""The firewall service unloads conntrack without re-applying its sysctls.

What it detects
    ``/etc/sysconfig/iptables-config`` (or ``ip6tables-config``, RHEL family) with
    ``IPTABLES_MODULES_UNLOAD="yes"`` (also the default when the key is absent)
    while ``IPTABLES_SYSCTL_LOAD_LIST`` does not name ``.nf_conntrack``.

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

from ctdoctor.checks.base import CRITICAL, WARNING, Finding

CODE = "CT007"
TITLE = "unload hazard: firewall service unloads conntrack without re-applying sysctls"


def run(ctx):
    from ctdoctor.status import settings_report

    cfgs = ctx.snap.persisted.iptables_config
    drift_max = any(d["key"].endswith("nf_conntrack_max") for d in settings_report(ctx.snap)["drift"])
    for path, cfg in cfgs.items():
        unload = cfg.get("IPTABLES_MODULES_UNLOAD", cfg.get("IP6TABLES_MODULES_UNLOAD", "yes")).lower()
        load_list = cfg.get("IPTABLES_SYSCTL_LOAD_LIST", cfg.get("IP6TABLES_SYSCTL_LOAD_LIST", ""))
        if unload != "yes" or "nf_conntrack" in load_list or "net.netfilter" in load_list:
            continue
        explicit = "IPTABLES_MODULES_UNLOAD" in cfg or "IP6TABLES_MODULES_UNLOAD" in cfg
        yield Finding(
            CODE, CRITICAL if drift_max else WARNING, TITLE,
            summary=f"{path}: IPTABLES_MODULES_UNLOAD=\"yes\"{'' if explicit else ' (the default)'} and no "
                    "IPTABLES_SYSCTL_LOAD_LIST=\".nf_conntrack\""
                    + ("; nf_conntrack_max has already drifted (CT006)" if drift_max else ""),
            evidence={"file": path, "IPTABLES_MODULES_UNLOAD": unload,
                      "IPTABLES_SYSCTL_LOAD_LIST": load_list or None, "max_drifted": drift_max},
            explanation="A restart or stop of the iptables service unloads nf_conntrack; it comes back with kernel "
                        "defaults, and nothing re-applies /etc/sysctl.d.",
            fix=[f"sed -i 's/^#\\?IPTABLES_SYSCTL_LOAD_LIST=.*/IPTABLES_SYSCTL_LOAD_LIST=\".nf_conntrack\"/' {path}",
                 f"# or keep the modules loaded: IPTABLES_MODULES_UNLOAD=\"no\" in {path}",
                 "ctdoctor apply   # sets IPTABLES_SYSCTL_LOAD_LIST and installs the udev re-apply rule"],
        )
