"""``ctdoctor top``'s document: the selected listings (a saved file, each netns's live or saved
listing) tallied by the query, merged under their netns (pod, Kubernetes namespace) name when
asked, and shaped into rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ctdoctor.errors import Failure, InputError, UsageError
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.fields import SEP
from ctdoctor.listing.query import Query
from ctdoctor.listing.rows import rows
from ctdoctor.listing.tally import Tally
from ctdoctor.sources.listing_files import PROC_LISTING, StartedListing, tally_path, tally_stream


@dataclass
class Request:
    """What ``top`` reads: a saved file, or the root's namespaces (``netns``: a name, ``all`` or
    None for the initial one) by ``via`` (auto, proc, netlink); ``root`` opens the root (a live
    host, or an image given with ``--root``) when it is needed."""

    file: str | None
    root_path: str | None
    netns: str | None
    via: str
    limit: int | None
    root: Callable[[], Any]


class Source:
    def __init__(self, name: str, label: str | None, opener: Callable[[], Any] | None, state: Any = None):
        self.name, self.label, self.opener, self.state = name, label, opener, state
        self.started: StartedListing | None = None  # its listing, already being read (early_listing)


def _sources(req: Request) -> tuple[list[Source], Any]:
    if req.file:
        if req.root_path:
            raise UsageError("--file and --root cannot be used together")
        if req.netns:
            raise UsageError("--file and --netns cannot be used together (a saved listing has one netns)")
        return [Source("file", "stdin" if req.file == "-" else req.file, None)], None
    from ctdoctor.sources import snapshot  # 70 ms of imports that a saved file (--file) does not need

    root = req.root()
    states, _ = snapshot.netns_states(root, req.netns)
    return [Source(st.name, None, partial(snapshot.open_listing, st), st) for st in states], root


def early_listing(req: Request) -> StartedListing | None:
    """A live /proc listing of the one netns ``--netns`` names (init, or an ``ip netns`` name),
    opened and being read by the reader thread before the rest of the setup (imports, netns
    discovery, the counts): the kernel's formatting, most of the time of a big table, runs
    meanwhile on another CPU. None when that does not apply or fails: the normal path then opens
    it, and reports any error."""
    if req.file or req.root_path not in (None, "", "/") or req.via == "netlink":
        return None
    from ctdoctor.sources import netns as nsmod  # 17 ms of imports that a saved file (--file) does not need

    ref = nsmod.named_ref(req.netns)
    if ref is None:
        return None
    try:
        stream = nsmod.stream_in(ref, PROC_LISTING)
    except (OSError, Failure):
        return None
    return StartedListing(stream, ref.inode)


def tally_all(req: Request, query: Query, warm: Callable[[], threading.Thread | None] | None = None,
              early: bool = False) -> tuple[Tally, list[dict[str, Any]], list[str]]:
    """The listings of the selected sources, aggregated. ``warm``: starts loading the text
    renderer in a thread while the C scanner reads (it releases the GIL; the Python one holds it,
    and forks), after the setup, whose imports it would slow. ``early``: the kernel starts
    formatting a single live listing before the setup (see ``early_listing``)."""
    started = early_listing(req) if early and accelerated() else None
    try:
        srcs, root = _sources(req)
        if started is not None:
            mine = [s for s in srcs if s.state is not None and s.state.inode == started.inode]
            if len(srcs) == 1 and mine:
                mine[0].started, started = started, None
        warming = warm() if warm is not None and accelerated() else None
        try:
            return _tally_sources(req, query, srcs, root)
        finally:
            if warming is not None:
                warming.join()
    finally:
        if started is not None:  # not the netns the setup chose, or the setup failed: not read
            started.close()


def _live_listing(req: Request, s: Source, root: Any, several: bool, notes: list[str]) -> Any:
    """(stream, label, tailed) of one netns's listing; None when a netns of several has none."""
    via = req.via
    if via != "auto" and (root is None or not root.is_live):
        raise UsageError("--via chooses between live sources; a host image has only its saved listing")
    if s.started is not None:
        started, s.started = s.started, None
        return started, PROC_LISTING, False
    got = s.opener() if via in ("auto", "proc") and s.opener is not None else None
    if got is None and via == "proc":
        raise InputError(f"{PROC_LISTING} is not readable in netns {s.name} (try --via netlink)")
    if got is None and root is not None and root.is_live:
        from ctdoctor.sources import ctnetlink, snapshot  # only for a live host

        ref = snapshot.ref_of(s.state)
        got = ctnetlink.listing_source(ref) if ref is not None else None
    if got is None and several:
        # --netns all: one namespace without a listing (a sosreport's init) is a note, not a failure
        notes.append(f"netns {s.name}: no entry listing in {root.label if root else '?'}; left out")
        return None
    if got is None:
        raise InputError(f"no entry listing for netns {s.name} in {root.label if root else '?'}"
                         " (collected with --no-entries, or a sosreport without the conntrack plugin)")
    return got


def _tally_sources(req: Request, query: Query, srcs: list[Source],
                   root: Any) -> tuple[Tally, list[dict[str, Any]], list[str]]:
    combined = Tally(query)
    header: list[dict[str, Any]] = []
    notes: list[str] = []
    for s in srcs:
        if s.opener is None:  # --file
            t = tally_path(req.file or "-", query)
            header.append({"netns": None, "source": s.label, "listed": t.total, "count": None, "max": None})
        else:
            got = _live_listing(req, s, root, len(srcs) > 1, notes)
            if got is None:
                continue
            stream, label, tailed = got
            with stream:
                t = tally_stream(stream, query, skip_first_partial=tailed)
            header.append({"netns": s.name, "source": label, "listed": t.total, "count": s.state.count,
                           "max": s.state.max, "sample": bool(tailed),
                           "pod": s.state.pod.label if getattr(s.state, "pod", None) else None})
        if t.unreadable:
            header[-1]["unreadable"] = t.unreadable
        group = _group_name(query, s)
        combined.merge(t, prefix=(group.encode() + SEP) if group is not None else b"")
    if not header:
        raise InputError("no entry listing in any selected namespace: " + "; ".join(notes))
    return combined, header, notes


def _group_name(query: Query, s: Source) -> str | None:
    """What ``--by netns|pod|k8s-namespace`` groups this source's entries under (None: not asked)."""
    pod = getattr(s.state, "pod", None) if s.state is not None else None
    if "netns" in query.by:
        return s.name
    if "pod" in query.by:
        return str(pod.label) if pod else f"(no pod: {s.name})"
    if "k8s-namespace" in query.by:
        return str(pod.namespace or "(no namespace)") if pod else f"(no pod: {s.name})"
    return None


def build_doc(req: Request, query: Query, warm: Callable[[], threading.Thread | None] | None = None,
              early: bool = False) -> dict[str, Any]:
    """The document ``top`` prints (text, JSON or CSV)."""
    tally, header, notes = tally_all(req, query, warm, early)
    groups, top_rows = rows(tally, query, req.limit)
    doc: dict[str, Any] = {
        "schema": 1,
        "source": header[0]["source"] if len(header) == 1 else [h["source"] for h in header],
        "netns": header[0]["netns"] if len(header) == 1 else "all",
        "by": query.by,
        "total": tally.total,
        "matched": tally.matched,
        "count": header[0]["count"] if len(header) == 1 else sum(h["count"] or 0 for h in header),
        "max": header[0]["max"] if header else None,
        "accounting": tally.accounting,
        "namespaces": header,
        "groups": groups,
        "rows": top_rows,
        "unreadable": tally.unreadable,
    }
    if tally.first_bad:
        doc["first_unreadable"] = {"line": tally.first_bad[0], "text": tally.first_bad[1]}
    if notes:
        doc["notes"] = notes
    return doc
