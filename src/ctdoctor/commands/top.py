"""ctdoctor top: who fills the table."""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from ctdoctor import cleanup
from ctdoctor.commands.common import PERIOD, Needs, bounded, check_format, open_root, warm_imports
from ctdoctor.errors import UsageError
from ctdoctor.listing.query import Query, parse_query
from ctdoctor.render import watch
from ctdoctor.render.jsonout import emit
from ctdoctor.top import report
from ctdoctor.top.report import Request


def add_arguments(p: Any) -> None:
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


def request(args: Any) -> Request:
    """What to read, from the arguments."""
    return Request(file=args.file, root_path=getattr(args, "root", None), netns=getattr(args, "netns", None),
                   via=getattr(args, "via", "auto"), limit=args.limit if args.limit and args.limit > 0 else None,
                   root=partial(open_root, args))


def build_doc(args: Any, query: Query, warm: bool = False, early: bool = False) -> dict[str, Any]:
    """``ctdoctor top``'s document; ``warm``: the text renderer's imports load while the listing is read."""
    warming = (lambda: warm_imports("rich.console", "rich.table", "ctdoctor.render.top_text")) if warm else None
    return report.build_doc(request(args), query, warming, early)


def warn_unreadable(doc: dict[str, Any]) -> None:
    """Say on stderr what was skipped, so a count is never silently short."""
    for n in doc.get("notes", []):
        print(f"ctdoctor: note: {n}", file=sys.stderr)
    if doc.get("unreadable"):
        fb = doc.get("first_unreadable") or {}
        print(f"ctdoctor: note: {doc['unreadable']} line(s) were not conntrack entries and were skipped "
              f"(first: line {fb.get('line')}: {fb.get('text', '')!r}); counts are of the {doc['total']} read",
              file=sys.stderr)


def requires(args: Any) -> Needs:
    if args.rate:  # rates are counted as the running kernel makes entries: a host image has no event stream
        return Needs(live=True, root=True, what="top --rate", why="CAP_NET_ADMIN to receive conntrack events")
    return Needs()


def run(args: Any) -> int:
    fmt = check_format(args, ("text", "json", "csv"))
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
    from ctdoctor.render import top_text
    from ctdoctor.render.progress import Progress

    with Progress(fmt) as progress:  # on a terminal, for text, once reading or laying out takes over a second
        progress.step("reading the entries" + (f" of {args.file}" if args.file else ""))
        doc = build_doc(args, query, warm=fmt == "text", early=True)
        shown = top_text.laid_out(doc, progress.step) if fmt == "text" else None
    if fmt != "json":
        warn_unreadable(doc)
    if shown is not None:
        sys.stdout.write(shown)
    else:
        _emit(doc, fmt, top_text.render, top_text.write_csv)
    cleanup.skip_teardown()  # nothing left to write: the tables need not be freed one object at a time
    return 0


def _emit(doc: dict[str, Any], fmt: str, text_renderer: Any, csv_writer: Any) -> None:
    """Print a top document as JSON, CSV or a rich table."""
    if fmt == "json":
        emit(doc)
    elif fmt == "csv":
        csv_writer(doc, sys.stdout)
    else:
        from rich.console import Console  # rich: 20 ms of imports, only for text

        Console(highlight=False).print(text_renderer(doc))


def _rate(args: Any, query: Query, fmt: str) -> int:
    """``--rate``: windows of NEW events, once, or rolling with ``--watch``."""
    from ctdoctor.monitor import rate  # the event readers: 60 ms of imports that only --rate needs

    if args.file:
        raise UsageError("--rate reads the live event stream; it cannot read a saved listing (--file)")
    if "pod" in query.by or "k8s-namespace" in query.by:
        raise UsageError("--rate groups by netns, not by pod: use --by netns (status and top name each netns's pod)")
    if args.watch is not None and fmt != "text":
        raise UsageError("--watch works with --format text only")
    netns = getattr(args, "netns", None)
    limit = args.limit if args.limit and args.limit > 0 else None
    if args.watch is None:
        doc = rate.measure(netns, query, args.interval, limit)
        for n in doc.get("notes", []):
            print(f"ctdoctor: note: {n}", file=sys.stderr)
        from ctdoctor.render import top_text  # rich, for the text table

        _emit(doc, fmt, top_text.render_rate, top_text.write_rate_csv)
        return 0
    from ctdoctor.render.top_text import TopWatch, render_rate  # rich: loaded when a frame is drawn

    state = TopWatch(args.watch, rate=True, keys=sys.stdin.isatty())
    with rate.Watcher(netns, query, args.interval, min(args.watch, args.interval), limit) as watcher:
        return watch.run(lambda console: render_rate(watcher.frame(), width=console.width, watch=state),
                         args.watch, wait=False)


def _watch(args: Any, query: Query) -> int:
    from ctdoctor.render.top_text import TopWatch, render  # rich: loaded when a frame is drawn
    from ctdoctor.sources.incident import DEFAULT_DIR, recorder_history  # (tarfile: not on top's fast path)

    state = TopWatch(args.watch, keys=sys.stdin.isatty(),  # a recorder running here: its counts start the trend
                     history=recorder_history(DEFAULT_DIR) if getattr(args, "root", None) is None else {})
    return watch.run(lambda console: render(build_doc(args, query), width=console.width, watch=state), args.watch)
