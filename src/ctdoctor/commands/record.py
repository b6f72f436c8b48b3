"""ctdoctor record: capture the evidence of a filling table automatically (a daemon).

Samples every netns each ``--interval`` seconds; when one crosses ``--threshold`` or its
drop / insert_failed counters rise, writes ``DIR/<UTC time>-<netns>.tar.gz`` (a host image:
read it with ``--root``). ``ctdoctor incidents --dir DIR`` lists them.
"""

from __future__ import annotations

import argparse

from ctdoctor.commands.common import PERIOD, Needs, bounded
from ctdoctor.errors import UsageError
from ctdoctor.monitor import record


def _size(text: str) -> int:
    try:
        v = record.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v < 1 << 20:
        raise argparse.ArgumentTypeError(f"{text}: at least 1M")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="where incident bundles go (created, mode 0700)")
    p.add_argument("--threshold", type=bounded(float, 0, 1, lo_open=True), default=0.8, metavar="F",
                   help="capture when a netns's count / max reaches this (default 0.8)")
    p.add_argument("--interval", type=PERIOD, default=1.0, metavar="S", help="seconds between samples (default 1)")
    p.add_argument("--cooldown", type=bounded(float, 0, 86400 * 7), default=600.0, metavar="S",
                   help="at most one incident per netns per this many seconds (default 600)")
    p.add_argument("--keep", type=bounded(int, 1, 100000), default=50, metavar="N",
                   help="keep at most N bundles; the oldest go first (default 50)")
    p.add_argument("--max-size", type=_size, default=2 << 30, metavar="SIZE",
                   help="keep the bundles under this total (default 2G)")
    p.add_argument("--rate-seconds", type=bounded(float, 0.5, 60), default=3.0, metavar="S",
                   help="seconds of new-flow events recorded in each incident (default 3)")


def requires(args: argparse.Namespace) -> Needs:
    return Needs(live=True, root=True, what="record", why="to enter every netns, dump its table and receive its events")

def run(args: argparse.Namespace) -> int:
    fmt = getattr(args, "format", None)
    if fmt not in (None, "text"):
        raise UsageError("--format does not apply to record (it logs one line per event)")
    record.run(args.dir, args.threshold, args.interval, args.keep, args.max_size, args.cooldown,
               netns=getattr(args, "netns", None), rate_seconds=args.rate_seconds)
    return 0
