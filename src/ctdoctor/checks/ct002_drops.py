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

from ctdoctor import kernel
from ctdoctor.checks.base import CRITICAL, INFO, WARNING, Finding, Unknown, ev
from ctdoctor.kernel import TABLE_FULL

CODE = "CT002"
TITLE = "packets dropped by conntrack"


def run(ctx):
    log = [e for e in ctx.snap.kernel_log if e.kind == TABLE_FULL]
    by_inode: dict[int, list] = {}
    anonymous = []
    for e in log:
        (by_inode.setdefault(e.netns_inode, []) if e.netns_inode else anonymous).append(e)
    at_max = [st for st in ctx.namespaces if st.count is not None and st.max and st.count >= 0.95 * st.max]
    seen_any_stats = False
    for st in ctx.namespaces:
        lines, inferred = _lines_of(st, by_inode, anonymous, at_max)
        if st.stats is None and not lines:
            continue
        seen_any_stats = seen_any_stats or st.stats is not None
        finding = _finding(ctx, st, lines, inferred, st in at_max)
        if finding is not None:
            yield finding
    gone = _gone(ctx, by_inode)
    if gone is not None:
        yield gone
    if not seen_any_stats and not log:
        yield Unknown(CODE, "not enough data: no conntrack stats and no kernel log")


def _lines_of(st, by_inode: dict, anonymous: list, at_max: list) -> tuple[list, bool]:
    """The table-full lines of this netns, and whether they were matched by inference."""
    lines = list(by_inode.get(st.inode, [])) if st.inode else []
    # Without the inode in the line: the initial netns (which never has one), or the ones at the max.
    if anonymous and (st.name == "init" or st in at_max):
        return lines + anonymous, st.name != "init" or bool(at_max and st not in at_max)
    return lines, False


def _finding(ctx, st, lines: list, inferred: bool, full: bool) -> Finding | None:
    sums = st.stats.sums if st.stats else {}
    rates = st.rates() or {}
    drop, failed = sums.get("drop", 0), sums.get("insert_failed", 0)
    r_drop, r_failed = rates.get("drop", 0), rates.get("insert_failed", 0)
    if not (drop or failed or lines):
        return None
    rising = r_drop > 0 or r_failed > 0
    sev = CRITICAL if rising or (lines and full) else WARNING
    parts = []
    if drop or failed:
        parts.append(f"drop {drop}, insert_failed {failed} since boot"
                     + (f" (now {r_drop:g}/s and {r_failed:g}/s)" if st.interval else ""))
    if lines:
        parts.append(f"{len(lines)} 'table full' kernel log line(s)" + (" (attributed by inference: the "
                     "kernel printed no netns)" if inferred else ""))
    fill = st.fill
    return Finding(
        CODE, sev, TITLE, netns=st.name,
        summary=f"netns {st.name}: " + "; ".join(parts),
        evidence={"drop": ev(drop, st.sources.get("stats")), "insert_failed": ev(failed, st.sources.get("stats")),
                  "drop_per_second": r_drop if st.interval else None,
                  "insert_failed_per_second": r_failed if st.interval else None,
                  "fill": round(fill, 4) if fill is not None else None,
                  "kernel_log": [{"line": e.line, "source": f"{e.source}:{e.lineno}"} for e in lines[:5]],
                  "kernel_log_lines": len(lines), "netns_inferred": inferred},
        explanation=_explain(ctx, full, inferred),
        fix=([f"ctdoctor top --netns {st.name} --by src,state"] if full else [])
        + ["ctdoctor status --netns all --interval 5   # are they still rising?"],
    )


def _explain(ctx, full: bool, inferred: bool) -> str:
    why = ("The table is at its max: see CT001. " if full else
           "The table is not full now: the drops happened earlier (counters are since boot) "
           "or come from insert races. ")
    how = ""
    if inferred:
        how = ("The initial netns is never named in the log line, so this was matched by which namespace is at "
               "the max." if kernel.logs_netns_inode(ctx.version) else
               f"This kernel ({ctx.snap.release or 'unknown'}) does not name the netns in the log line (only "
               "6.18+ does), so it was matched by which namespace is at the max.")
    return "Conntrack refused new entries and the packets were dropped. " + why + how


def _gone(ctx, by_inode: dict) -> Finding | None:
    """Lines naming namespaces that no longer exist (live only: an image lists what was there)."""
    known = {st.inode for st in ctx.namespaces if st.inode}
    gone = {ino: evs for ino, evs in by_inode.items() if ino not in known}
    if not gone or not ctx.live:
        return None
    n = sum(len(v) for v in gone.values())
    return Finding(
        CODE, INFO, "table full in network namespaces that no longer exist", netns=None,
        summary=f"{n} 'table full in netns N' kernel log line(s) name {len(gone)} namespace(s) that are gone: "
                + ", ".join(str(i) for i in sorted(gone)[:5]),
        evidence={"inodes": sorted(gone)[:20],
                  "kernel_log": [{"line": e.line, "source": f"{e.source}:{e.lineno}"}
                                 for evs in gone.values() for e in evs[:2]][:6]},
        explanation="Those namespaces (containers, pods, test namespaces) dropped packets before they were "
                    "removed. If they come back under the same workload, they will fill again.",
        fix=["ctdoctor status --netns all"],
    )
