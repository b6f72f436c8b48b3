"""ctdoctor top: who fills the table."""

from __future__ import annotations

import os
import sys

from ctdoctor.commands.common import PERIOD, Needs, bounded, check_format, open_root, warm_imports
from ctdoctor.errors import InputError, UsageError


def add_arguments(p) -> None:
    p.add_argument("--by", default="src", metavar="KEY[,KEY...]",
                   help="group by: src, dst, sport, dport, pair, state, proto, zone, mark, netns, pod, k8s-namespace, "
                        "reply-src, reply-dst, l3 (default src)")
    p.add_argument("--limit", type=bounded(int, 0, 10**9), default=20, metavar="N", help="rows to show (default 20; 0 = all)")
    p.add_argument("--state", metavar="S[,S]", help="only entries in these states (TCP states, UNREPLIED, ASSURED, "
                                                     "REPLIED, OFFLOAD)")
    p.add_argument("--proto", metavar="P[,P]", help="only these protocols (tcp, udp, icmp, ...)")
    p.add_argument("--src", metavar="CIDR[,CIDR]", help="only entries whose original source is in these networks")
    p.add_argument("--dst", metavar="CIDR[,CIDR]", help="only entries whose original destination is in these networks")
    p.add_argument("--port", type=bounded(int, 0, 65535), metavar="N", help="only entries whose original sport or dport is N")
    p.add_argument("--file", metavar="PATH|-", help="read a saved /proc/net/nf_conntrack or conntrack -L "
                                                    "[-o extended|save] listing (plain or gzip; - for stdin)")
    p.add_argument("--via", choices=("auto", "proc", "netlink"), default="auto",
                   help="live table source: /proc/net/nf_conntrack, a ctnetlink dump, or auto (proc, else netlink)")
    p.add_argument("--watch", type=PERIOD, metavar="N", help="redraw every N seconds (q or Ctrl-C to quit)")
    p.add_argument("--rate", action="store_true",
                   help="new entries per second by key, from ctnetlink NEW events (live kernel; root)")
    p.add_argument("--interval", type=bounded(float, 0.2, 3600), default=5.0, metavar="S",
                   help="with --rate: seconds of events per window (default 5; with --watch, the rolling window)")


PROC_LISTING = "/proc/net/nf_conntrack"  # as the netns reading it sees it


class Source:
    def __init__(self, name, label, opener, state=None):
        self.name, self.label, self.opener, self.state = name, label, opener, state
        self.started = None  # its listing, already being read (_early_listing)


def _sources(args):
    if args.file:
        if getattr(args, "root", None):
            raise UsageError("--file and --root cannot be used together")
        if getattr(args, "netns", None):
            raise UsageError("--file and --netns cannot be used together (a saved listing has one netns)")
        return [Source("file", "stdin" if args.file == "-" else args.file, None)], None
    from ctdoctor.sources import snapshot

    root = open_root(args)
    states, _ = snapshot.netns_states(root, getattr(args, "netns", None))
    out = []
    for st in states:
        out.append(Source(st.name, None, st.open_entries, st))
    return out, root


def tally_all(args, query, warm: bool = False, early: bool = False):
    """The listings of the selected sources, aggregated. ``warm``: the text renderer (rich, ~20 ms
    of imports) loads in a thread while the C scanner reads (it releases the GIL; the Python one
    holds it, and forks), started after the setup, whose imports it would slow. ``early``: the
    kernel starts formatting a single live listing before the setup (see ``_early_listing``)."""
    from ctdoctor.listing.accel import accelerated

    started = _early_listing(args) if early and accelerated() else None
    try:
        srcs, root = _sources(args)
        if started is not None:
            mine = [s for s in srcs if s.state is not None and s.state.inode == started.inode]
            if len(srcs) == 1 and mine:
                mine[0].started, started = started, None
        warming = warm_imports("rich.console", "rich.table", "ctdoctor.render.top_text") \
            if warm and accelerated() else None
        try:
            return _tally_sources(args, query, srcs, root)
        finally:
            if warming is not None:
                warming.join()
    finally:
        if started is not None:  # not the netns the setup chose, or the setup failed: not read
            started.close()


def _early_listing(args):
    """A live /proc listing of the one netns ``--netns`` names (init, or an ``ip netns`` name),
    opened and being read by the reader thread before the rest of the setup (imports, netns
    discovery, the counts): the kernel's formatting, most of the time of a big table, runs
    meanwhile on another CPU. None when that does not apply or fails: the normal path then opens
    it, and reports any error."""
    if args.file or getattr(args, "root", None) not in (None, "", "/") or getattr(args, "via", "auto") == "netlink":
        return None
    from ctdoctor.sources import netns as nsmod
    from ctdoctor.top.tally import StartedListing

    ref = nsmod.named_ref(getattr(args, "netns", None))
    if ref is None:
        return None
    try:
        stream = nsmod.stream_in(ref, PROC_LISTING)
    except (OSError, nsmod.Failure):
        return None
    return StartedListing(stream, ref.inode)


def _tally_sources(args, query, srcs, root):
    from ctdoctor.top.tally import SEP, Tally, tally_file, tally_stream

    combined = Tally(query)
    header = []
    notes: list[str] = []
    for s in srcs:
        if s.opener is None:  # --file
            if s.label != "stdin" and os.path.isfile(s.label) and not _is_gzip(s.label):
                t = tally_file(s.label, query)
            else:
                from ctdoctor.sources.entries import open_listing

                with open_listing(args.file) as f:
                    t = tally_stream(f, query)
            header.append({"netns": None, "source": s.label, "listed": t.total, "count": None, "max": None})
        else:
            via = getattr(args, "via", "auto")
            if via != "auto" and (root is None or not root.is_live):
                raise UsageError("--via chooses between live sources; a host image has only its saved listing")
            if s.started is not None:
                got, s.started = (s.started, PROC_LISTING, False), None
            else:
                got = s.opener() if via in ("auto", "proc") else None
            if got is None and via == "proc":
                raise InputError(f"/proc/net/nf_conntrack is not readable in netns {s.name} (try --via netlink)")
            if got is None:
                if root is not None and root.is_live:
                    got = _netlink_source(s)
                if got is None and len(srcs) > 1:
                    # --netns all: one namespace without a listing (a sosreport's init) is a note, not a failure
                    notes.append(f"netns {s.name}: no entry listing in {root.label if root else '?'}; left out")
                    continue
                if got is None:
                    raise InputError(f"no entry listing for netns {s.name} in {root.label if root else '?'}"
                                     " (collected with --no-entries, or a sosreport without the conntrack plugin)")
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


def _group_name(query, s) -> str | None:
    """What ``--by netns|pod|k8s-namespace`` groups this source's entries under (None: not asked)."""
    pod = getattr(s.state, "pod", None) if s.state is not None else None
    if "netns" in query.by:
        return s.name
    if "pod" in query.by:
        return pod.label if pod else f"(no pod: {s.name})"
    if "k8s-namespace" in query.by:
        return (pod.namespace or "(no namespace)") if pod else f"(no pod: {s.name})"
    return None


def _netlink_source(s):
    from ctdoctor.sources import ctnetlink

    return ctnetlink.listing_source(s.state.ref)


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def build_doc(args, query, warm: bool = False, early: bool = False):
    from ctdoctor.top.tally import rows

    tally, header, notes = tally_all(args, query, warm, early)
    limit = args.limit if args.limit and args.limit > 0 else None
    groups, top_rows = rows(tally, query, limit)
    doc = {
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


def warn_unreadable(doc) -> None:
    """Say on stderr what was skipped, so a count is never silently short."""
    for n in doc.get("notes", []):
        print(f"ctdoctor: note: {n}", file=sys.stderr)
    if doc.get("unreadable"):
        fb = doc.get("first_unreadable") or {}
        print(f"ctdoctor: note: {doc['unreadable']} line(s) were not conntrack entries and were skipped "
              f"(first: line {fb.get('line')}: {fb.get('text', '')!r}); counts are of the {doc['total']} read",
              file=sys.stderr)


def requires(args) -> Needs:
    if args.rate:  # rates are counted as the running kernel makes entries: a host image has no event stream
        return Needs(live=True, root=True, what="top --rate", why="CAP_NET_ADMIN to receive conntrack events")
    return Needs()

def run(args) -> int:
    fmt = check_format(args, ("text", "json", "csv"))
    from ctdoctor.top.tally import parse_query

    query = parse_query(args.by, args.state, args.proto, args.port, args.src, args.dst)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    if args.rate:
        return _rate(args, query, fmt)
    if args.watch is not None:
        if args.watch <= 0:
            raise UsageError("--watch needs a positive number of seconds")
        if fmt != "text":
            raise UsageError("--watch works with --format text only")
        if args.file:
            raise UsageError("--watch needs a live table, not --file")
        return _watch(args, query)
    doc = build_doc(args, query, warm=fmt == "text", early=True)
    if fmt != "json":
        warn_unreadable(doc)
    from ctdoctor.render import top_text

    _emit(doc, fmt, top_text.render, top_text.write_csv)
    from ctdoctor import cleanup

    cleanup.skip_teardown()  # nothing left to write: the tables need not be freed one object at a time
    return 0


def _emit(doc: dict, fmt: str, text_renderer, csv_writer) -> None:
    """Print a top document as JSON, CSV or a rich table."""
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit(doc)
    elif fmt == "csv":
        csv_writer(doc, sys.stdout)
    else:
        from rich.console import Console

        Console(highlight=False).print(text_renderer(doc))


def _rate(args, query, fmt: str) -> int:
    """``--rate``: windows of NEW events, once, or rolling with ``--watch``."""
    from ctdoctor.monitor import rate

    if args.file:
        raise UsageError("--rate reads the live event stream; it cannot read a saved listing (--file)")
    if "pod" in query.by or "k8s-namespace" in query.by:
        raise UsageError("--rate groups by netns, not by pod: use --by netns (status and top name each netns's pod)")
    if args.watch is not None and fmt != "text":
        raise UsageError("--watch works with --format text only")
    from ctdoctor.sources import netns as nsmod

    refs = nsmod.select(nsmod.discover(), getattr(args, "netns", None))
    rate.check_events(refs)
    limit = args.limit if args.limit and args.limit > 0 else None
    counters = rate.open_counters(refs, query)
    try:
        if args.watch is None:
            sl = rate.windows(counters, args.interval)
            doc = rate.build_doc(query, [sl], limit, int(any(w.lost for w in sl)), 1)
            _emit_rate(doc, fmt)
            return 0
        return _rate_watch(args, query, counters, limit)
    finally:
        for c in counters:
            c.close()


def _emit_rate(doc: dict, fmt: str) -> None:
    for n in doc.get("notes", []):
        print(f"ctdoctor: note: {n}", file=sys.stderr)
    from ctdoctor.render import top_text

    _emit(doc, fmt, top_text.render_rate, top_text.write_rate_csv)


def _rate_watch(args, query, counters, limit) -> int:
    from rich.console import Console
    from rich.live import Live

    from ctdoctor.monitor import rate
    from ctdoctor.render.top_text import render_rate

    slice_s = min(args.watch, args.interval)
    roll = rate.Rolling(args.interval, slice_s)
    console = Console(highlight=False)
    from ctdoctor.render.keys import Keys

    with Keys() as keys, Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                roll.add(rate.windows(counters, slice_s))
                doc = rate.build_doc(query, list(roll.slices), limit, roll.lost_windows, roll.windows)
                live.update(render_rate(doc), refresh=True)
                if keys.quit_pressed():
                    break
        except KeyboardInterrupt:
            pass
    return 0


def _watch(args, query) -> int:
    from rich.console import Console
    from rich.live import Live

    from ctdoctor.render.top_text import render

    console = Console(highlight=False)
    prev = None
    from ctdoctor.render.keys import Keys

    with Keys() as keys, Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                doc = build_doc(args, query)
                live.update(render(doc, prev), refresh=True)
                prev = {tuple(r["key"].items()): r["count"] for r in doc["rows"]}
                if keys.wait_for_quit(args.watch):
                    break
        except KeyboardInterrupt:
            pass
    return 0


