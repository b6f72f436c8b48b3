"""Live settings differ from the persisted ones.

What it detects
    A ``net.netfilter.*`` value (``nf_conntrack_max``, timeouts, ...) whose live
    value differs from what the sysctl configuration would set, with sysctl.d(5)
    precedence applied (``/etc``, ``/run``, ``/usr/local/lib``, ``/usr/lib``,
    ``/lib``; by file name; ``/etc/sysctl.conf`` last).

Why it matters
    The ``net.netfilter`` sysctls exist only while ``nf_conntrack`` is loaded, and
    a freshly loaded module starts from its defaults. Two mechanisms lose the
    persisted values:

    - a module reload: ``service iptables restart`` with
      ``IPTABLES_MODULES_UNLOAD="yes"`` (CT007), ``modprobe -r``; the module comes
      back with defaults and nothing re-applies sysctl.d;
    - boot order: ``systemd-sysctl`` runs early, before anything loads
      ``nf_conntrack``; the keys do not exist yet and are skipped, and the module
      is autoloaded later (by the first iptables/nft rule) with its defaults.

    A built-in conntrack (no module) is immune to both, so there drift means
    someone or something changed the value at run time.

How to fix
    Apply the value now (``sysctl -w``) and make it stick: a udev rule that runs
    ``systemd-sysctl --prefix=/net/netfilter`` when the module is added (the
    method sysctl.d(5) documents), ``nf_conntrack`` in modules-load.d so it loads
    before systemd-sysctl, and ``options nf_conntrack hashsize=`` in modprobe.d.
    ``ctdoctor apply`` writes all of them; ``ctdoctor guard`` restores drift
    within seconds.
"""

from ctdoctor.checks.base import WARNING, Finding
from ctdoctor.kernel import NF

CODE = "CT006"
TITLE = "settings drift: live value differs from the persisted one"


def run(ctx):
    from ctdoctor.status import settings_report

    drift = settings_report(ctx.snap)["drift"]
    if not drift:
        return
    builtin = ctx.module_state("nf_conntrack") == "builtin"
    keys = ", ".join(d["key"].removeprefix(NF) for d in drift)
    max_drift = next((d for d in drift if d["key"] == NF + "nf_conntrack_max"), None)
    why = ("conntrack is built into this kernel, so no module reload reset it: something changed the value at run "
           "time (another tool, a container runtime, a script)") if builtin else (
        "the module was (re)loaded after the settings were applied: a firewall restart that unloads modules, "
        "modprobe -r, or boot order (systemd-sysctl ran before nf_conntrack was loaded)")
    yield Finding(
        CODE, WARNING, TITLE,
        summary=f"{len(drift)} setting(s) differ from the persisted value: {keys}"
                + (f" (nf_conntrack_max live {max_drift['live']}, persisted {max_drift['persisted']})"
                   if max_drift else ""),
        evidence={"drift": [{"key": d["key"], "live": d["live"], "persisted": d["persisted"],
                             "source": f"{d['file']}:{d['line']}"} for d in drift],
                  "nf_conntrack": ctx.module_state("nf_conntrack")},
        explanation=f"The persisted values are not in effect: {why}.",
        fix=[f"sysctl -w {d['key']}={d['persisted']}" for d in drift]
        + ["ctdoctor apply " + " ".join(
            (f"--max {d['persisted']}" if d["key"] == NF + "nf_conntrack_max" else
             f"--timeout {d['key'].removeprefix(NF + 'nf_conntrack_')}={d['persisted']}") for d in drift
            if d["key"] != NF + "nf_conntrack_buckets") + "   # adds the udev re-apply rule and modules-load.d",
           "ctdoctor guard --once   # or the ctdoctor-guard.service to keep them"],
    )
