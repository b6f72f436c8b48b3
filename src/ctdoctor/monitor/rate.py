"""``top --rate``: new entries per second by key, from ctnetlink NEW events.

The listing says who *holds* entries; the event stream says who *makes* them
right now. Each selected netns gets its own event sockets, read in parallel
threads (``select`` and ``recv`` release the GIL) for one window, and the NEW
events are grouped with the very aggregator ``top`` uses, so keys, filters and
output formats are the same.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ctdoctor.errors import Failure
from ctdoctor.listing.fields import SEP
from ctdoctor.listing.query import Query
from ctdoctor.listing.rows import rows
from ctdoctor.listing.tally import Tally
from ctdoctor.sources import ctevents
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources.listing_files import netlink_feeder


@dataclass
class Window:
    """Events of one netns over one window."""

    netns: str
    seconds: float = 0.0
    new: int = 0
    destroyed: int = 0
    lost: bool = False  # ENOBUFS: the kernel dropped events, counts are a lower bound
    tally: Tally | None = None  # of the NEW events


class EventCounter:
    """NEW and DESTROY events of one netns, aggregated by a top query, window after window."""

    def __init__(self, ref: nsmod.NetnsRef, query: Query, force_python: bool = False,
                 rcvbuf: int = ctevents.RCVBUF):
        self.ref, self.query, self.force_python = ref, query, force_python
        self.new_sock = ctevents.open_events(ref, ctevents.NFNLGRP_CONNTRACK_NEW, rcvbuf)
        try:
            self.del_sock = ctevents.open_events(ref, ctevents.NFNLGRP_CONNTRACK_DESTROY, rcvbuf)
        except Failure:
            self.new_sock.close()
            raise

    def close(self) -> None:
        self.new_sock.close()
        self.del_sock.close()

    def __enter__(self) -> EventCounter:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()

    def window(self, seconds: float, stop: Callable[[], bool] | None = None) -> Window:
        """Read events for ``seconds`` (or until ``stop()`` is true) and aggregate them: NEW events
        go straight into the aggregator (decoded in C when built), DESTROY events are counted."""
        feeder = netlink_feeder([self.query], self.force_python)
        w = Window(self.ref.name)
        t0 = time.monotonic()
        end = t0 + seconds
        socks = {s.fileno(): s for s in (self.new_sock, self.del_sock)}
        poller = select.poll()  # not select(): with hundreds of namespaces the fds pass 1024
        for fd in socks:
            poller.register(fd, select.POLLIN)
        while True:
            left = end - time.monotonic()
            if left <= 0 or (stop is not None and stop()):
                break
            for fd, _ev in poller.poll(min(left, 0.2) * 1000):
                s = socks[fd]
                drain = ctevents.Drain(s, self.force_python)
                for buf in drain:
                    if s is self.del_sock:
                        w.destroyed += ctevents.count_messages(buf)
                        continue
                    new, _malformed, _done = feeder.feed_netlink(buf)
                    w.new += new
                w.lost = w.lost or drain.lost
        w.seconds = time.monotonic() - t0
        w.tally = Tally(self.query, feeder.aggs[0], w.new)
        return w


def open_counters(refs: Iterable[nsmod.NetnsRef], query: Query, force_python: bool = False) -> list[EventCounter]:
    counters: list[EventCounter] = []
    try:
        for ref in refs:
            counters.append(EventCounter(ref, query, force_python))
    except BaseException:
        for c in counters:
            c.close()
        raise
    return counters


def windows(counters: list[EventCounter], seconds: float, stop: Callable[[], bool] | None = None) -> list[Window]:
    """One window of every counter, side by side."""
    out: list[Window | None] = [None] * len(counters)
    errs: list[BaseException] = []

    def one(i: int, c: EventCounter) -> None:
        try:
            out[i] = c.window(seconds, stop)
        except BaseException as e:
            errs.append(e)

    threads = [threading.Thread(target=one, args=(i, c), daemon=True) for i, c in enumerate(counters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        raise errs[0]
    return [w for w in out if w is not None]


def build_doc(query: Query, slices: list[list[Window]], limit: int | None, lost_windows: int,
              windows_seen: int) -> dict[str, Any]:
    """The rate document over ``slices`` (each a list of per-netns Windows of one time slice)."""
    combined = Tally(query, query.aggregator())
    per_ns: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    for sl in slices:
        seconds += max((w.seconds for w in sl), default=0.0)
        for w in sl:
            if w.tally is not None:
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
        doc["notes"] = [(f"the kernel dropped events (ENOBUFS) in {lost_windows} of {windows_seen} window(s): "
                         "the rates shown are a lower bound")]
    return doc


class Rolling:
    """The last ``span`` seconds of events, in slices, for ``--watch``."""

    def __init__(self, span: float, slice_seconds: float):
        self.slices: deque[list[Window]] = deque(maxlen=max(1, round(span / slice_seconds)))
        self.lost_windows = 0
        self.windows = 0

    def add(self, sl: list[Window]) -> None:
        self.slices.append(sl)
        self.windows += 1
        if any(w.lost for w in sl):
            self.lost_windows += 1


def check_events(refs: Iterable[nsmod.NetnsRef]) -> None:
    """Refuse (one line) when a namespace's kernel does not send conntrack events."""
    for ref in refs:
        why = ctevents.events_enabled(ref)
        if why:
            raise Failure(why)


def event_namespaces(netns: str | None) -> list[nsmod.NetnsRef]:
    """The namespaces ``--netns`` selects, each checked to send conntrack events."""
    refs = nsmod.select(nsmod.discover(), netns)
    check_events(refs)
    return refs


# ---- the service ``top --rate`` calls: once, or a rolling window for --watch ---------------------------


def measure(netns: str | None, query: Query, interval: float, limit: int | None) -> dict[str, Any]:
    """``top --rate``: one window of ``interval`` seconds of the events of every selected namespace,
    as the rate document (``limit`` rows; None = all)."""
    counters = open_counters(event_namespaces(netns), query)
    try:
        sl = windows(counters, interval)
        return build_doc(query, [sl], limit, int(any(w.lost for w in sl)), 1)
    finally:
        for c in counters:
            c.close()


class Watcher:
    """``top --rate --watch``: the last ``span`` seconds of events, read a slice of ``slice_seconds`` at a
    time; each ``frame()`` reads one slice (it takes that long: no other wait) and returns the document
    over the rolling window. Holds the event sockets until ``close()``."""

    def __init__(self, netns: str | None, query: Query, span: float, slice_seconds: float, limit: int | None):
        self.query, self.limit, self.slice_seconds = query, limit, slice_seconds
        self.counters = open_counters(event_namespaces(netns), query)
        self.roll = Rolling(span, slice_seconds)

    def frame(self) -> dict[str, Any]:
        self.roll.add(windows(self.counters, self.slice_seconds))
        return build_doc(self.query, list(self.roll.slices), self.limit, self.roll.lost_windows, self.roll.windows)

    def close(self) -> None:
        for c in self.counters:
            c.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *a: object) -> None:
        self.close()
