"""Packets dropped by conntrack.

What it detects
    Drops counted by the kernel (``drop`` and ``insert_failed`` in
    ``/proc/net/stat/nf_conntrack`` or ``conntrack -S``), whether they are still
    rising (sampled over ``--interval``), and ``table full, dropping packet``
    lines in the kernel log in every format: 2.6-era with a trailing period,
    ``nf_conntrack: nf_conntrack: table full, dropping packet`` and, from 6.18,
    ``table full in netns N, dropping packet``, matched to the namespace by its
    inode. Older lines carry no netns: they are attributed to the namespace(s)
    at the max, and the finding says the match was inferred.

Why it matters
    Each drop is a lost packet: a SYN that is retried after 1, 3, 7 s, a DNS
    query that times out. ``insert_failed`` without ``drop`` usually means
    racing inserts of the same flow (UDP, parallel DNS lookups from one socket)
    that lost a clash resolution; rising quickly it is worth a look.

How to fix
    If the table is full, see CT001 (raise the max, find who fills it). If
    ``insert_failed`` rises with a table that is not full, look for parallel
    UDP queries on one socket (glibc's A and AAAA lookups: ``options
    single-request-reopen`` in resolv.conf) and NAT port collisions.
"""

from collections.abc import Iterator
from typing import Any

from ctdoctor.diagnose.checks.base import (
    CRITICAL,
    INFO,
    WARNING,
    Context,
    Finding,
    NetnsState,
    Unknown,
    ev,
)
from ctdoctor.diagnose.checks.base import Severity as Sev
from ctdoctor.model import kernel
from ctdoctor.model.kernlog import KernelLogEvent

CODE = "CT002"
TITLE = "packets dropped by conntrack"
ORDER = {INFO: 0, WARNING: 1, CRITICAL: 2}


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    seen_any_stats = False
    any_log = any(e.kind == kernel.TABLE_FULL for e in ctx.snap.kernel_log)
    for st in ctx.namespaces:
        lines, inferred = ctx.table_full_lines(st)
        if st.stats is None and not lines:
            continue
        seen_any_stats = seen_any_stats or st.stats is not None
        finding = _finding(ctx, st, lines, inferred)
        if finding is not None:
            yield finding
    unmapped = _unmapped(ctx)
    if unmapped is not None:
        yield unmapped
    if not ctx.snap.kernel_log_sources and seen_any_stats:
        yield Unknown(CODE, "not enough data: no kernel log was readable (dmesg, /var/log, the journal): "
                            "'table full' lines cannot be seen")
    if not seen_any_stats and not any_log:
        yield Unknown(CODE, "not enough data: no conntrack stats (/proc/net/stat/nf_conntrack, conntrack -S) and "
                            "no kernel log" + (" (read: " + ", ".join(ctx.snap.kernel_log_sources) + ")"
                                               if ctx.snap.kernel_log_sources else ""))


def _when(ctx: Context, lines: list[KernelLogEvent]) -> dict[str, Any]:
    """When the drops in the log happened, against the capture: the facts a person asks first."""
    last = lines[-1]
    age = ctx.age(last)
    return {"first": lines[0].when, "last": last.when, "last_age_seconds": round(age) if age is not None else None,
            "captured_at_source": ctx.snap.captured_at_source or None,
            "current_boot": sum(e.boot != -1 for e in lines), "earlier_boots": sum(e.boot == -1 for e in lines),
            "stale": sum(ctx.stale(e) for e in lines),
            "suppressed_after": sum(e.suppressed_after for e in lines)}


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "at an unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s before the capture"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min before the capture"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h before the capture"
    return f"{seconds / 86400:.0f} days before the capture"


def _log_severity(ctx: Context, st: NetnsState, lines: list[KernelLogEvent]) -> Sev | None:
    if not lines:
        return None
    fresh = [e for e in lines if not ctx.stale(e)]
    if not fresh:
        return INFO  # history: weeks ago
    current = [e for e in fresh if e.boot != -1]
    if current:
        full = st.fill is not None and st.fill >= 0.95
        # this boot, within the day (or when: unknown, as in a bare dmesg): the table overflows at its
        # peaks and new connections are being refused; the fill at the capture is one moment
        recent = any((a := ctx.age(e)) is None or a <= 86400 for e in current)
        return CRITICAL if full or recent or ctx.dropping(st) else WARNING
    return WARNING  # before the last reboot: the cause is probably still there


def _counter_severity(ctx: Context, st: NetnsState, lines: list[KernelLogEvent]) -> Sev | None:
    sums = st.stats.sums if st.stats else {}
    rates = st.rates() or {}
    drop, failed = sums.get("drop", 0), sums.get("insert_failed", 0)
    if rates.get("drop", 0) > 0:
        return CRITICAL
    if rates.get("insert_failed", 0) > 0:
        return WARNING
    if drop and not lines and failed >= drop / 2:
        return INFO  # no table-full line: insert clashes (racing UDP inserts), counted since boot
    if drop:
        return INFO if lines and all(ctx.stale(e) for e in lines) else WARNING
    if failed:
        return INFO
    return None


def _finding(ctx: Context, st: NetnsState, lines: list[KernelLogEvent], inferred: bool) -> Finding | None:
    sums = st.stats.sums if st.stats else {}
    rates = st.rates() or {}
    drop, failed = sums.get("drop"), sums.get("insert_failed")
    r_drop, r_failed = rates.get("drop", 0), rates.get("insert_failed", 0)
    if not (drop or failed or lines):
        return None
    levels = [lv for lv in (_log_severity(ctx, st, lines), _counter_severity(ctx, st, lines)) if lv]
    sev = max(levels, key=lambda lv: ORDER[lv])
    parts = []
    if drop or failed:
        parts.append(f"drop {drop or 0}, insert_failed {failed or 0} since boot"
                     + (f" (now {r_drop:g}/s and {r_failed:g}/s)" if st.interval else ""))
    when = _when(ctx, lines) if lines else None
    if lines and when:
        n_supp = when["suppressed_after"]
        where = ("all before the last reboot" if when["current_boot"] == 0 and when["earlier_boots"] else
                 f"{when['earlier_boots']} before the last reboot" if when["earlier_boots"] else "")
        parts.append(f"{len(lines)} 'table full' kernel log line(s)"
                     + (f" (+{n_supp} suppressed by the rate limit)" if n_supp else "")
                     + (f", the last {human_age(when['last_age_seconds'])}" if when["last_age_seconds"] is not None
                        else f", the last at {_stamp(when['last'])}" if when["last"] else "")
                     + (f", {where}" if where else "")
                     + (" (attributed by inference: the kernel printed no netns)" if inferred else ""))
    fill = st.fill
    full = fill is not None and fill >= 0.95
    return Finding(
        CODE, sev, TITLE, netns=st.name,
        summary=f"netns {st.label}: " + "; ".join(parts),
        evidence={"drop": ev(drop, st.sources.get("stats")), "insert_failed": ev(failed, st.sources.get("stats")),
                  "drop_per_second": r_drop if st.interval else None,
                  "insert_failed_per_second": r_failed if st.interval else None,
                  "fill": round(fill, 4) if fill is not None else None,
                  "kernel_log": [{"line": e.line, "source": f"{e.source}:{e.lineno}"} for e in lines[-5:]],
                  "kernel_log_lines": len(lines), "netns_inferred": inferred, "when": when},
        explanation=_explain(ctx, full, inferred, lines, drop, failed, fill is None),
        fix=([f"ctdoctor top --netns {st.name} --by src,state"] if full else [])
        + ["ctdoctor status --netns all --interval 5   # are they still rising?"],
    )


def _explain(ctx: Context, full: bool, inferred: bool, lines: list[KernelLogEvent], drop: int | None,
             failed: int | None, fill_unknown: bool = False) -> str:
    if full:
        why = "The table is at its max: see CT001. "
    elif lines and all(ctx.stale(e) for e in lines):
        why = "The table is not full now and the last table-full line is old: this is history, unless it recurs. "
    elif lines and all(e.boot == -1 for e in lines):
        why = ("The table is not full now: it was before the last reboot. A reboot empties the table; the cause "
               "(the load, a max that is too small) is probably still there. ")
    elif drop and not lines and failed and failed >= drop / 2:
        why = ("No table-full line was logged: these are insert clashes (two packets of one new flow, e.g. "
               "parallel DNS queries from one socket, racing to create its entry), counted since boot. ")
    elif lines and fill_unknown:
        why = ("Whether the table is full now is not known (no count was captured); the log says it was. ")
    else:
        why = ("The table is not full now: the drops happened earlier (counters are since boot) "
               "or come from insert races. ")
    how = ""
    if inferred:
        how = ("The initial netns is never named in the log line, so this was matched by which namespace is at "
               "the max." if kernel.logs_netns_inode(ctx.version) else
               f"This kernel ({ctx.snap.release or 'unknown'}) does not name the netns in the log line (only "
               "6.18+ does), so it was matched by which namespace is at the max.")
    return "Conntrack refused new entries and the packets were dropped. " + why + how


def _unmapped(ctx: Context) -> Finding | None:
    """Lines naming a netns this host or image does not have: live, namespaces that are gone; offline,
    namespaces the image does not map to inodes (sos records none) and none could be inferred."""
    gone = ctx.unmapped_table_full()
    if not gone:
        return None
    evs = sorted((e for v in gone.values() for e in v), key=lambda e: (e.at or 0, e.lineno))
    n = len(evs)
    fresh = [e for e in evs if not ctx.stale(e)]
    if ctx.live:
        title, sev = "table full in network namespaces that no longer exist", INFO
        summary = (f"{n} 'table full in netns N' kernel log line(s) name {len(gone)} namespace(s) that are gone: "
                   + ", ".join(str(i) for i in sorted(gone)[:5]))
        explanation = ("Those namespaces (containers, pods, test namespaces) dropped packets before they were "
                       "removed. If they come back under the same workload, they will fill again.")
    else:
        title = "table full in network namespaces this image cannot name"
        sev = WARNING if fresh else INFO
        summary = (f"{n} 'table full in netns N' kernel log line(s) name {len(gone)} namespace inode(s) "
                   f"({', '.join(str(i) for i in sorted(gone)[:5])}) that the image does not map to a name, the "
                   f"last {human_age(ctx.age(evs[-1]))}")
        explanation = ("A non-initial namespace (a pod, a container) hit the global max and dropped packets. The "
                       "image records no namespace inodes, and no captured namespace is at the max now, so which "
                       "one it was cannot be told from these files.")
    return Finding(
        CODE, sev, title, netns=None, summary=summary,
        evidence={"inodes": sorted(gone)[:20],
                  "kernel_log": [{"line": e.line, "source": f"{e.source}:{e.lineno}"} for e in evs[-6:]],
                  "kernel_log_lines": n},
        explanation=explanation,
        fix=["ctdoctor status --netns all"],
    )


def _stamp(when: str) -> str:
    """A log line's time as a person reads it: dmesg's seconds since boot (``91882.450137``) rounded and
    said as such; any other form as written."""
    try:
        return f"{float(when):,.0f} s after boot"
    except ValueError:
        return when
