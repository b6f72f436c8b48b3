"""ctdoctor plan: recommend max, buckets and timeouts, with what they cost."""

from __future__ import annotations

import argparse
from typing import Any

from ctdoctor.commands.common import SECONDS, bounded, check_format, open_root
from ctdoctor.diagnose import plan
from ctdoctor.diagnose.facts import context
from ctdoctor.errors import UsageError
from ctdoctor.render.jsonout import emit
from ctdoctor.sources import snapshot


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--headroom", type=bounded(float, 1, 1000), default=2.0, metavar="F",
                   help="multiply the observed load by F (default 2)")
    p.add_argument("--memory-budget", metavar="SIZE", help="cap what a full table may take: 512M, 2G or 10%%")
    p.add_argument("--interval", type=SECONDS, default=None, metavar="S",
                   help="seconds to sample the insert counter for the new-flow rate (live default 1)")


def build(args: argparse.Namespace) -> dict[str, Any]:
    if args.headroom < 1:
        raise UsageError("--headroom must be >= 1")
    root = open_root(args)
    interval = args.interval if args.interval is not None else (1.0 if root.is_live else None)
    snap = snapshot.build(root, getattr(args, "netns", None) or "all", interval=interval or None,
                          with_rules=False, with_log=False)
    ctx = context(snap, root, live=root.is_live)
    budget = plan.parse_size(args.memory_budget, snap.mem_total) if args.memory_budget else None
    return plan.make_plan(ctx, args.headroom, budget)


def run(args: argparse.Namespace) -> int:
    fmt = check_format(args, ("text", "json"))
    doc = build(args)
    if fmt == "json":
        emit(doc)
        return 0
    from rich.console import Console  # rich: 20 ms of imports, only for text

    from ctdoctor.render.plan_text import render  # imports rich

    con = Console(highlight=False)
    con.print(render(doc, con.width))
    return 0
