"""ctdoctor [doctor]: every check, with evidence, explanation and fix commands."""

from __future__ import annotations

from ctdoctor.commands.common import SECONDS, check_format, open_root
from ctdoctor.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("--only", metavar="CODES", help="run only these checks (CT001,CT002,...)")
    p.add_argument("--skip", metavar="CODES", help="skip these checks")
    p.add_argument("--interval", type=SECONDS, default=None, metavar="S",
                   help="seconds between two counter samples for rates (live default 1; 0 = no sampling)")
    p.add_argument("--compare", metavar="IMAGE",
                   help="a later host image of the same host: its counters give the rates (with --root)")
    p.add_argument("--verbose", action="store_true",
                   help="the details of every finding (default: of the warnings and criticals)")
    p.add_argument("--no-pager", action="store_true",
                   help="never page the text report (on a terminal a report taller than it goes through $PAGER "
                        "or less -R)")


def run(args) -> int:
    fmt = check_format(args, ("text", "json", "nagios"))
    from ctdoctor.diagnose import doctor
    from ctdoctor.diagnose.facts import context
    from ctdoctor.sources import snapshot

    only, skip = doctor.parse_codes(args.only), doctor.parse_codes(args.skip)
    root = open_root(args)
    interval = args.interval
    if interval is not None and interval < 0:
        raise UsageError("--interval must be >= 0")
    if interval is None:
        interval = 1.0 if root.is_live else None
    if args.compare and root.is_live:
        raise UsageError("--compare takes a second host image and goes with --root")
    from ctdoctor.render.progress import Progress

    with Progress(fmt) as progress:
        progress.step("reading the namespaces, their counters and settings")
        snap = snapshot.build(root, getattr(args, "netns", None) or "all")
        if args.compare:
            _compare(snap, args)
        ctx = context(snap, root, live=root.is_live, progress=progress.step)
        if interval and root.is_live:
            # the listings the checks will want are read while the second counter sample waits
            import threading

            big = [st for st in snap.namespaces if ctx.listing_matters(st)]
            progress.step(f"sampling the counters for {interval:g} s"
                          + (f" and reading {len(big)} listing(s)" if big else ""))
            warm = threading.Thread(target=ctx.reader.warm, args=(big,), name="ctdoctor-warm", daemon=True)
            warm.start()
            snapshot.sample_again(snap, interval)
            warm.join()
            snapshot.drop_vanished(snap)
        progress.step(f"running the checks over {len(snap.namespaces)} namespace(s)")
        findings, unknown = doctor.run_checks(ctx, only or None, skip or None)
    gone = set(snapshot.drop_vanished(snap))  # a pod deleted while the checks read its listing
    if gone:
        findings = [f for f in findings if f.netns not in gone]
        unknown = [u for u in unknown if u.netns not in gone]
    code = doctor.exit_code(findings, unknown)
    doc = doctor.report(ctx, findings, unknown)
    skipped = [n for n in snap.notes if "could not be entered" in n]
    if root.is_live and not _is_root() and (unknown or skipped) and code == doctor.OK:
        # checks that did not run are not an OK: a Nagios check run as an unprivileged user (NRPE)
        # says UNKNOWN, with what it skipped
        code = doctor.UNKNOWN
        doc["unprivileged"] = True
    args._exit_code = code  # kept when the reader of a pipe leaves early (`| head -1`)
    if fmt == "json":
        from ctdoctor.render.jsonout import emit

        emit(doc)
    elif fmt == "nagios":
        from ctdoctor.render.nagios import render as nagios

        print(nagios(doc, code, snap.namespaces))
    else:
        from rich.console import Console

        from ctdoctor.render.doctor_text import render

        con = Console(highlight=False)
        report = render(doc, verbose_info=args.verbose, width=con.width)
        if args.no_pager or not con.is_terminal:
            con.print(report, crop=False)  # a command's one long word is never cut
        else:
            _page(con, report)
    return code


def _page(con, report) -> None:
    """On a terminal: the report as it is when it fits, else through $PAGER (default less -R, which
    keeps the colours and quits at once on a short screen)."""
    import os
    import shlex
    import subprocess
    import sys

    with con.capture() as cap:
        con.print(report, crop=False)
    text = cap.get()
    if text.count("\n") < con.height:
        sys.stdout.write(text)
        return
    pager = shlex.split(os.environ.get("PAGER") or "less -R")
    try:
        subprocess.run(pager, input=text.encode(), check=False)
    except (OSError, ValueError):  # no pager here: the report as it is
        sys.stdout.write(text)



def _compare(snap, args) -> None:
    """Use a later image's counters as the second sample (rates over the time between the two)."""
    from ctdoctor.sources import snapshot
    from ctdoctor.sources.hostroot import HostRoot

    later = snapshot.build(HostRoot.open(args.compare), getattr(args, "netns", None) or "all", with_rules=False,
                           with_log=False)
    t0, t1 = snap.captured_at, later.captured_at
    span = (t1 - t0) if t0 and t1 and t1 > t0 else None
    by = {st.name: st for st in later.namespaces}
    for st in snap.namespaces:
        other = by.get(st.name)
        if other is None or other.stats is None or st.stats is None:
            continue
        st.stats_later = other.stats
        st.interval = span or 1.0
        if span is None:
            snap.notes.append("--compare: the images carry no capture time; rates are per comparison, not per second")


def _is_root() -> bool:
    import os

    return os.geteuid() == 0
