"""Liberal or loose TCP tracking.

What it detects
    ``nf_conntrack_tcp_be_liberal=1`` (out-of-window packets are not marked
    INVALID), ``nf_conntrack_tcp_loose=0`` (no mid-stream pickup) and
    ``nf_conntrack_checksum=0``.

Why it matters
    - ``be_liberal=1`` hides window-tracking problems (asymmetric routing, lost
      packets, broken middleboxes) that would otherwise show as INVALID
      packets; some setups need it, but it also lets spoofed in-window-looking
      packets through.
    - ``tcp_loose=0`` means existing connections are not picked up after a
      conntrack restart, failover or flush: they break until re-established.
    - ``checksum=0`` stops conntrack from ignoring packets with bad checksums.

How to fix
    Make sure it is deliberate. To return to the defaults:
    ``sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=0``,
    ``..._tcp_loose=1``, ``..._checksum=1``, and remove the line that sets it.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import INFO, Context, Finding, ev, sysctl_fix

CODE = "CT017"
TITLE = "liberal or loose TCP tracking"

ODD = {
    "nf_conntrack_tcp_be_liberal": (1, 0, ("out-of-window TCP packets are accepted instead of marked INVALID: "
                                                  "window problems and some spoofing go unnoticed")),
    "nf_conntrack_tcp_loose": (0, 1, ("connections already open are not picked up mid-stream: after a "
                                             "flush, restart or failover they break")),
    "nf_conntrack_checksum": (0, 1, "packets with bad checksums are tracked like good ones"),
}


def run(ctx: Context) -> Iterator[Finding]:
    for key, (odd, default, why) in ODD.items():
        v = ctx.setting(key)
        if v is None or v != odd:
            continue
        yield Finding(
            CODE, INFO, TITLE,
            summary=f"{key} = {v} (default {default})",
            evidence={key: ev(v, ctx.setting_source(key))},
            explanation=why.capitalize() + ".",
            fix=[sysctl_fix(key, default) + "   # if it is not deliberate"],
        )
