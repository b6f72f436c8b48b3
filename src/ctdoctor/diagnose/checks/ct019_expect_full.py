"""Expectation table full.

What it detects
    ``nf_conntrack: expectation table full`` in the kernel log, or the number of
    expectations (``/proc/net/nf_conntrack_expect``) at 90 % of
    ``nf_conntrack_expect_max``.

Why it matters
    Helpers (ftp, sip, tftp, h323, ...) create expectations for the related
    connections a protocol opens (FTP data, RTP media). When the expectation
    table is full, those related connections are not recognised: passive FTP
    transfers and SIP calls fail while the control connection works.

How to fix
    Raise ``net.netfilter.nf_conntrack_expect_max`` (default: 4 × buckets / 256);
    check which helper creates them (``conntrack -L expect``) and whether it
    should be attached at all (explicit ``ct helper`` rules instead of automatic
    assignment).
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING, Context, Finding, ev, sysctl_fix
from ctdoctor.model.kernel import EXPECT_FULL

CODE = "CT019"
TITLE = "expectation table full"


def run(ctx: Context) -> Iterator[Finding]:
    lines = [e for e in ctx.snap.kernel_log if e.kind == EXPECT_FULL]
    emax = ctx.setting("nf_conntrack_expect_max")
    count, src = ctx.expectations()
    near = count is not None and emax and count >= 0.9 * emax
    if not lines and not near:
        return
    sev = CRITICAL if near else INFO if lines and all(ctx.stale(e) for e in lines) else WARNING
    yield Finding(
        CODE, sev, TITLE,
        summary=(f"{count} of {emax} expectations" if near else "")
        + ("; " if near and lines else "") + (f"{len(lines)} 'expectation table full' log line(s)" if lines else ""),
        evidence={"expectations": ev(count, src), "expect_max": ev(emax, ctx.setting_source("nf_conntrack_expect_max")),
                  "kernel_log": [{"line": e.line, "source": f"{e.source}:{e.lineno}"} for e in lines[:5]]},
        explanation="Helpers could not register the related connections they expect; those connections (FTP data, "
                    "SIP media) are not recognised and fail.",
        fix=[sysctl_fix("nf_conntrack_expect_max", max((emax or 1024) * 2, 1024)), "conntrack -L expect"],
    )
