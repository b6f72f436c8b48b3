"""ctdoctor plan: recommend max, buckets and timeouts, with what they cost."""

from __future__ import annotations

import argparse
from typing import Any

from ctdoctor.commands.common import SECONDS, bounded, check_format, open_root
from ctdoctor.diagnose import plan
from ctdoctor.diagnose.facts import context
from ctdoctor.errors import UsageError
from ctdoctor.render.jsonout import emit
from ctdoctor.render.status_text import human_bytes
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
    from rich import box
    from rich.console import Console
    from rich.table import Table


    c = Console(highlight=False)
    cur = doc["current"]
    c.print(f"[bold]now[/] max {cur['max']}, buckets {cur['buckets']}; kernel {doc['host']['kernel']}, "
            f"RAM {human_bytes(doc['host']['mem_total'])}, "
            + (f"{doc['host']['cpus']} CPUs" if doc["host"]["cpus"] else "CPUs unknown"))
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("rule", "max", "buckets", "why"):
        t.add_column(col, justify="right" if col in ("max", "buckets") else "left")
    for cand in doc["candidates"]:
        t.add_row(cand["rule"], str(cand["max"]), str(cand["buckets"] or "-"), cand["reason"])
    c.print(t)
    p, m = doc["pick"], doc["memory"]
    c.print(f"[bold]pick[/] max {p['max']}, buckets {p['buckets']} (load × {doc['headroom']:g}, rounded up to "
            f"65536, never below the defaults" + (", capped by the memory budget" if p["capped_by_budget"] else "")
            + ")")
    c.print(f"[bold]memory[/] {human_bytes(m['total_bytes'])} when full = {p['max']} × {m['entry_size']} B "
            f"({m['entry_size_source']}{', an estimate' if m['entry_size_estimated'] else ''}) + "
            f"{human_bytes(m['buckets_bytes'])} of buckets"
            + (f", {m['share_of_ram'] * 100:.1f}% of RAM" if m["share_of_ram"] is not None else ""))
    for t_ in doc["timeouts"]:
        c.print(f"[bold]timeout[/] {t_['name']}: {t_['current']} → {t_['suggested']} s ({t_['reason']})")
    c.print(f"[bold]apply with[/] {doc['apply']}")
    return 0
