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

    Not every difference is a loss. kube-proxy (and container runtimes) raise
    ``nf_conntrack_max`` and set ``tcp_timeout_established=86400`` /
    ``tcp_timeout_close_wait=3600`` at run time on every node: a live max above
    the persisted one, or kube-proxy's own values, are reported as information,
    never as a warning. A persisted key this kernel does not have (old
    ``ip_conntrack_*`` names on a newer kernel) is not drift either: see CT020.

How to fix
    Apply the value now (``sysctl -w``) and make it stick: a udev rule that runs
    ``systemd-sysctl --prefix=/net/netfilter`` when the module is added (the
    method sysctl.d(5) documents), ``nf_conntrack`` in modules-load.d so it loads
    before systemd-sysctl, and ``options nf_conntrack hashsize=`` in modprobe.d.
    ``ctdoctor apply`` writes all of them; ``ctdoctor guard`` restores drift
    within seconds.
"""

from collections.abc import Iterator
from typing import Any

from ctdoctor.diagnose.checks.base import INFO, WARNING, Context, Finding
from ctdoctor.model.drift import drift as settings_drift
from ctdoctor.model.kernel import NF, parse_int

# What kube-proxy sets at run time (pkg/proxy/conntrack): not a lost setting when seen live.
RUNTIME_SET = {NF + "nf_conntrack_tcp_timeout_established": 86400, NF + "nf_conntrack_tcp_timeout_close_wait": 3600}


def raised_at_run_time(d: dict[str, Any]) -> bool:
    """A live value someone set on purpose after boot: a max above the persisted one, kube-proxy's timeouts."""
    live, persisted = parse_int(d["live"]), parse_int(d["persisted"])
    if d["key"] in (NF + "nf_conntrack_max", NF + "nf_conntrack_buckets"):
        return live is not None and persisted is not None and live > persisted
    return RUNTIME_SET.get(d["key"]) == live

CODE = "CT006"
TITLE = "settings drift: live value differs from the persisted one"


def run(ctx: Context) -> Iterator[Finding]:
    drift = settings_drift(ctx.snap)
    if not drift:
        return
    builtin = ctx.builtin_tracker()
    lost = [d for d in drift if not raised_at_run_time(d)]
    keys = ", ".join(d["key"].removeprefix(NF) for d in drift)
    max_drift = next((d for d in drift if d["key"] == NF + "nf_conntrack_max"), None)
    why = ("conntrack is built into this kernel, so no module reload reset it: something changed the value at run "
           "time (another tool, a container runtime, a script)") if builtin else (
        "the module was (re)loaded after the settings were applied: a firewall restart that unloads modules, "
        "modprobe -r, or boot order (systemd-sysctl ran before nf_conntrack was loaded)")
    if not lost:
        why = ("the live values are higher or are what kube-proxy sets at run time: something raised them on "
               "purpose after boot (kube-proxy, a container runtime, a tuning script); the persisted file is "
               "only out of date")
    yield Finding(
        CODE, WARNING if lost else INFO, TITLE,
        summary=f"{len(drift)} setting(s) differ from the persisted value: {keys}"
                + (f" (nf_conntrack_max live {max_drift['live']}, persisted {max_drift['persisted']})"
                   if max_drift else ""),
        evidence={"drift": [{"key": d["key"], "live": d["live"], "persisted": d["persisted"],
                             "source": f"{d['file']}:{d['line']}"} for d in drift],
                  "nf_conntrack": ctx.tracker_state(), "lost": [d["key"] for d in lost]},
        explanation=f"The persisted values are not in effect: {why}.",
        fix=_fixes(lost, "persisted") if lost else _fixes(drift, "live"),
    )


def _fixes(rows: list[dict[str, Any]], which: str) -> list[str]:
    """Restore the persisted values (lost ones), or persist the live ones (raised on purpose)."""
    args = " ".join((f"--max {d[which]}" if d["key"] == NF + "nf_conntrack_max" else
                     f"--timeout {d['key'].removeprefix(NF + 'nf_conntrack_')}={d[which]}") for d in rows
                    if d["key"] != NF + "nf_conntrack_buckets")
    if which == "live":
        return [f"ctdoctor apply {args}   # persist what runs now"] if args else []
    return [f"sysctl -w {d['key']}={d['persisted']}" for d in rows] + (
        [f"ctdoctor apply {args}   # adds the udev re-apply rule and modules-load.d"] if args else []) + [
        "ctdoctor guard --once   # or the ctdoctor-guard.service to keep them"]
