"""Run the checks over a snapshot and turn their findings into the report (docs/design.md, "Data flow of the doctor"; schemas/doctor.schema.json)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ctdoctor.diagnose.checks import MODULES, load
from ctdoctor.diagnose.checks.base import CRITICAL, INFO, SEVERITY_ORDER, WARNING, Context, Finding, Unknown
from ctdoctor.diagnose.facts import context, gather
from ctdoctor.errors import CheckFailed, CtdError, UsageError
from ctdoctor.model.fixes import in_scope
from ctdoctor.model.snapshot import NetnsState, Snapshot
from ctdoctor.sources import snapshot
from ctdoctor.sources.hostfacts import has_listing
from ctdoctor.sources.hostroot import HostRoot

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



# ---- the doctor as one service: read, sample, judge, report ------------------------------------------


@dataclass
class Diagnosis:
    """What ``ctdoctor doctor`` prints: the report, its exit code and the namespaces it judged."""

    doc: dict[str, Any]
    code: int
    namespaces: list[NetnsState] = field(default_factory=list)


def diagnose(root: HostRoot, netns: str | None = None, only: set[str] | None = None, skip: set[str] | None = None,
             interval: float | None = None, compare: str | None = None,
             step: Callable[[str], None] = lambda _what: None) -> Diagnosis:
    """The doctor over ``root``: the snapshot, a second counter sample ``interval`` s later on the live
    host (the listings the checks want read meanwhile) or a later image's counters (``compare``), the
    checks, and the exit code. ``step`` is told what is being done (the progress line)."""
    if interval is not None and interval < 0:
        raise UsageError("--interval must be >= 0")
    if interval is None:
        interval = 1.0 if root.is_live else None
    if compare and root.is_live:
        raise UsageError("--compare takes a second host image and goes with --root")
    step("reading the namespaces, their counters and settings")
    snap = snapshot.build(root, netns or "all")
    if compare:
        _compare(snap, HostRoot.open(compare), netns)
    ctx = context(snap, root, live=root.is_live, progress=step)
    if interval and root.is_live:
        # the listings the checks will want are read while the second counter sample waits
        big = [st for st in snap.namespaces if ctx.listing_matters(st)]
        step(f"sampling the counters for {interval:g} s" + (f" and reading {len(big)} listing(s)" if big else ""))
        warm = threading.Thread(target=ctx.reader.warm, args=(big,), name="ctdoctor-warm", daemon=True)
        warm.start()
        snapshot.sample_again(snap, interval)
        warm.join()
        snapshot.drop_vanished(snap)
    step(f"running the checks over {len(snap.namespaces)} namespace(s)")
    findings, unknown = run_checks(ctx, only or None, skip or None)
    gone = set(snapshot.drop_vanished(snap))  # a pod deleted while the checks read its listing
    if gone:
        findings = [f for f in findings if f.netns not in gone]
        unknown = [u for u in unknown if u.netns not in gone]
    code = exit_code(findings, unknown)
    doc = report(ctx, findings, unknown)
    skipped = [n for n in snap.notes if "could not be entered" in n]
    if root.is_live and os.geteuid() != 0 and (unknown or skipped) and code == OK:
        # checks that did not run are not an OK: a Nagios check run as an unprivileged user (NRPE)
        # says UNKNOWN, with what it skipped
        code = UNKNOWN
        doc["unprivileged"] = True
    return Diagnosis(doc, code, snap.namespaces)


def _compare(snap: Snapshot, later_root: HostRoot, netns: str | None) -> None:
    """Use a later image's counters as the second sample (rates over the time between the two)."""
    later = snapshot.build(later_root, netns or "all", with_rules=False, with_log=False)
    t0, t1 = snap.captured_at, later.captured_at
    span = (t1 - t0) if t0 and t1 and t1 > t0 else None
    by = {st.name: st for st in later.namespaces}
    compared = False
    for st in snap.namespaces:
        other = by.get(st.name)
        if other is None or other.stats is None or st.stats is None:
            continue
        st.stats_later = other.stats
        st.interval = span or 1.0
        compared = True
    if compared and span is None:  # said once, not once per namespace
        snap.notes.append("--compare: the images carry no capture time; rates are per comparison, not per second")
