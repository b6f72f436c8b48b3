"""``top --rate``: new entries per second by key, from ctnetlink NEW events.

The listing says who *holds* entries; the event stream says who *makes* them
right now. Each selected netns gets its own event sockets, read in parallel
threads (``select`` and ``recv`` release the GIL) for one window, and the NEW
events are grouped with the very aggregator ``top`` uses, so keys, filters and
output formats are the same.
"""

from __future__ import annotations

import threading
from collections import deque

from ctdoctor.errors import Failure


def open_counters(refs, query, force_python: bool = False):
    from ctdoctor.sources.ctevents import EventCounter

    counters = []
    try:
        for ref in refs:
            counters.append(EventCounter(ref, query, force_python))
    except BaseException:
        for c in counters:
            c.close()
        raise
    return counters


def windows(counters, seconds: float, stop=None) -> list:
    """One window of every counter, side by side."""
    out: list = [None] * len(counters)
    errs: list = []

    def one(i, c):
        try:
            out[i] = c.window(seconds, stop)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errs.append(e)

    threads = [threading.Thread(target=one, args=(i, c), daemon=True) for i, c in enumerate(counters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        raise errs[0]
    return out


def build_doc(query, slices: list[list], limit: int | None, lost_windows: int, windows_seen: int) -> dict:
    """The rate document over ``slices`` (each a list of per-netns Windows of one time slice)."""
    from ctdoctor.top import SEP, Tally, rows

    combined = Tally(query, query.aggregator())
    per_ns: dict[str, dict] = {}
    seconds = 0.0
    for sl in slices:
        seconds += max((w.seconds for w in sl), default=0.0)
        for w in sl:
            combined.merge(w.tally, prefix=(w.netns.encode() + SEP) if "netns" in query.by else b"")
            ns = per_ns.setdefault(w.netns, {"netns": w.netns, "new": 0, "destroyed": 0, "seconds": 0.0,
                                             "lost_events": False})
            ns["new"] += w.new
            ns["destroyed"] += w.destroyed
            ns["seconds"] += w.seconds
            ns["lost_events"] = ns["lost_events"] or w.lost
    seconds = seconds or 1e-9
    groups, top_rows = rows(combined, query, limit)
    for r in top_rows:
        r["rate"] = round(r["count"] / seconds, 3)
    for ns in per_ns.values():
        ns["seconds"] = round(ns["seconds"], 3)
        ns["new_per_second"] = round(ns["new"] / seconds, 3)
        ns["destroyed_per_second"] = round(ns["destroyed"] / seconds, 3)
    new = sum(n["new"] for n in per_ns.values())
    lost = any(n["lost_events"] for n in per_ns.values())
    doc = {
        "schema": 1,
        "mode": "rate",
        "source": "ctnetlink events",
        "netns": next(iter(per_ns)) if len(per_ns) == 1 else "all",
        "by": query.by,
        "seconds": round(seconds, 3),
        "new": new,
        "matched": combined.matched,
        "new_per_second": round(new / seconds, 3),
        "destroyed": sum(n["destroyed"] for n in per_ns.values()),
        "destroyed_per_second": round(sum(n["destroyed"] for n in per_ns.values()) / seconds, 3),
        "namespaces": list(per_ns.values()),
        "groups": groups,
        "rows": top_rows,
        "lost_events": lost,
        "lost_windows": lost_windows,
        "windows": windows_seen,
        "lower_bound": lost,
    }
    if lost:
        doc["notes"] = [f"the kernel dropped events (ENOBUFS) in {lost_windows} of {windows_seen} window(s): "
                        "the rates shown are a lower bound"]
    return doc


class Rolling:
    """The last ``span`` seconds of events, in slices, for ``--watch``."""

    def __init__(self, span: float, slice_seconds: float):
        self.slices: deque = deque(maxlen=max(1, round(span / slice_seconds)))
        self.lost_windows = 0
        self.windows = 0

    def add(self, sl: list) -> None:
        self.slices.append(sl)
        self.windows += 1
        if any(w.lost for w in sl):
            self.lost_windows += 1


def check_events(refs) -> None:
    from ctdoctor.sources.ctevents import events_enabled

    for ref in refs:
        why = events_enabled(ref)
        if why:
            raise Failure(why)
