"""Run the checks over a snapshot and turn their findings into the report (DESIGN §2, doctor JSON)."""

from __future__ import annotations

import os
from typing import Any

from ctdoctor.diagnose.checks import MODULES, load
from ctdoctor.diagnose.checks.base import CRITICAL, INFO, SEVERITY_ORDER, WARNING, Context, Finding, Unknown
from ctdoctor.diagnose.facts import gather
from ctdoctor.errors import CheckFailed, CtdError, UsageError
from ctdoctor.model.fixes import in_scope
from ctdoctor.sources.hostfacts import has_listing

SCHEMA = 1
OK, WARN, CRIT, UNKNOWN = 0, 1, 2, 3
CORE = {"CT001"}  # without these the doctor cannot judge the host at all


def parse_codes(text: str | None) -> set[str]:
    if not text:
        return set()
    codes = {c.strip().upper() for c in text.split(",") if c.strip()}
    bad = sorted(c for c in codes if c not in MODULES)
    if bad:
        raise UsageError(f"unknown check code(s): {', '.join(bad)} (see: ctdoctor checks)")
    return codes


def selected(only: set[str] | None = None, skip: set[str] | None = None) -> list[str]:
    """The codes of the checks to run, in catalogue order."""
    return [c for c in MODULES if not (only and c not in only) and not (skip and c in skip)]


def run_checks(ctx: Context, only: set[str] | None = None,
               skip: set[str] | None = None) -> tuple[list[Finding], list[Unknown]]:
    """Gather what the selected checks need, then run them on plain facts. A check that raises is a
    bug: CheckFailed (exit 3), never "not enough data"."""
    findings: list[Finding] = []
    unknown: list[Unknown] = []
    codes = selected(only, skip)
    plain = gather(ctx, codes)  # every read happens here, before any check runs
    for code in codes:
        mod = load(code)
        try:
            for item in mod.run(plain):
                (unknown if isinstance(item, Unknown) else findings).append(item)
        except CtdError:
            raise
        except Exception as e:  # a bug in the check: said so, exit 3
            if os.environ.get("CTDOCTOR_DEBUG"):
                raise
            raise CheckFailed(f"check {code} failed: {type(e).__name__}: {e} "
                              "(a bug in ctdoctor; set CTDOCTOR_DEBUG=1 for a traceback)") from e
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.id, f.netns or ""))
    return findings, unknown


def exit_code(findings: list[Finding], unknown: list[Unknown]) -> int:
    sev = {f.severity for f in findings}
    if CRITICAL in sev:
        return CRIT
    if WARNING in sev:
        return WARN
    if any(u.id in CORE for u in unknown):
        return UNKNOWN
    return OK


def report(ctx: Context, findings: list[Finding], unknown: list[Unknown]) -> dict[str, Any]:
    snap = ctx.snap
    pods = {st.name: st.pod.label for st in snap.namespaces if st.pod}
    # the fixes, complete for where the findings were made: an image's path rides along
    image = None if snap.source == "live" else os.path.abspath(snap.root_label)
    listed = {st.name for st in snap.namespaces if has_listing(st)} if image else None

    def fixes(f: Finding) -> list[dict[str, Any]]:
        return [in_scope(line, image=image, netns=f.netns, listed=listed).as_dict() for line in f.fix]

    return {
        "schema": SCHEMA,
        "host": {"hostname": snap.hostname, "kernel": snap.release, "source": snap.source},
        "namespaces": [{"name": st.name, "inode": st.inode, "count": st.count, "max": st.max,
                        "pod": st.pod.label if st.pod else None} for st in snap.namespaces],
        "findings": [{**f.as_dict(), "pod": pods.get(f.netns or ""), "fixes": fixes(f)} for f in findings],
        "unknown": [u.as_dict() for u in unknown],
        "summary": {"critical": sum(f.severity == CRITICAL for f in findings),
                    "warning": sum(f.severity == WARNING for f in findings),
                    "info": sum(f.severity == INFO for f in findings),
                    "unknown": len(unknown)},
        "notes": snap.notes,
        "vanished": snap.vanished,  # namespaces that went away while they were read (left out)
        "incomplete": snap.incomplete,  # sos plugins that timed out: what they held is not judged
        "captured_at": snap.captured_at, "captured_at_source": snap.captured_at_source or None,
    }

