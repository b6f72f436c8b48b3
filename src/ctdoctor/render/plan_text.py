"""Text rendering of ``plan``: now, the candidates (numbers right-aligned, the reason wrapped between
words), the pick, its memory and the timeouts; the apply command as it pastes, never wrapped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctdoctor.model.fixes import Fix, lines
from ctdoctor.render import fmt
from ctdoctor.render.wrap import hang

if TYPE_CHECKING:
    from rich.console import Group, RenderableType


def render(doc: dict[str, Any], width: int) -> Group:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    cur, h = doc["current"], doc["host"]
    parts: list[RenderableType] = [*hang(f"max {fmt.num(cur['max'])}, buckets {fmt.num(cur['buckets'])}; kernel {h['kernel']}, "
                       f"RAM {fmt.size(h['mem_total'])}, "
                       + (f"{fmt.num(h['cpus'])} CPUs" if h["cpus"] else "CPUs unknown"), width, label="now")]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    t.add_column("rule", no_wrap=True)
    t.add_column("max", justify="right", no_wrap=True)
    t.add_column("buckets", justify="right", no_wrap=True)
    t.add_column("why", ratio=1)
    for cand in doc["candidates"]:
        t.add_row(cand["rule"], fmt.num(cand["max"]), fmt.num(cand["buckets"]) if cand["buckets"] else "-",
                  Text(cand["reason"]))
    parts.append(t)
    parts.append(Text(""))
    p, m = doc["pick"], doc["memory"]
    parts.extend(hang(f"max {fmt.num(p['max'])}, buckets {fmt.num(p['buckets'])} (load × "
                      f"{fmt.num(doc['headroom'])}, rounded up to 65,536, never below the defaults"
                      + (", capped by the memory budget" if p["capped_by_budget"] else "") + ")", width, label="pick"))
    parts.extend(hang(f"{fmt.size(m['total_bytes'])} when full = {fmt.num(p['max'])} × {m['entry_size']} B "
                      f"({m['entry_size_source']}{', an estimate' if m['entry_size_estimated'] else ''}) + "
                      f"{fmt.size(m['buckets_bytes'])} of buckets"
                      + (f", {fmt.pct(m['share_of_ram'])} of RAM" if m["share_of_ram"] is not None else ""),
                      width, label="memory"))
    for t_ in doc["timeouts"]:
        parts.extend(hang(f"{t_['name']}: {fmt.num(t_['current'])} → {fmt.num(t_['suggested'])} s ({t_['reason']})",
                          width, label="timeout"))
    parts.append(Text("apply with", style="bold"))
    cmd = doc["apply"]
    for ln in lines(Fix.parse(cmd) if isinstance(cmd, str) else Fix(list(cmd)), width, "  $ "):
        parts.append(Text(ln, style="green", no_wrap=True, overflow="ignore"))
    return Group(*parts)
