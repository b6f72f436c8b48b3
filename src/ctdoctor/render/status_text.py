"""Text rendering of the status report (rich)."""

from __future__ import annotations


def human_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    n = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fill_bar(fill: float | None, width: int = 20) -> str:
    if fill is None:
        return "[dim]" + "·" * width + "[/]"
    n = min(width, round(fill * width))
    from ctdoctor.model.thresholds import FILL_CRITICAL, FILL_WARNING

    color = "red" if fill >= FILL_CRITICAL else "yellow" if fill >= FILL_WARNING else "green"
    return f"[{color}]" + "█" * n + "[/]" + "[dim]" + "·" * (width - n) + "[/]"


def render(doc: dict, console=None):
    from rich.console import Console, Group
    from rich.table import Table

    console = console or Console(highlight=False)
    h = doc["host"]
    parts: list = []
    parts.append(f"[bold]{h['hostname'] or '?'}[/]  kernel {h['kernel'] or '?'}  source {h['source']}"
                 + (f" ({h['root']})" if h["source"] != "live" else "")
                 + (f"  cpus {h['cpus']}" if h.get("cpus") else "")
                 + (f"  RAM {human_bytes(h['mem_total'])}" if h.get("mem_total") else ""))
    from rich import box

    t = Table(title="conntrack table per network namespace", title_justify="left", expand=False,
              box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("netns", no_wrap=True, min_width=6)
    for col in ("count/max", "fill", "memory", "drop", "ins.fail", "e.drop"):
        t.add_column(col, justify="right", min_width=16 if col == "fill" else None,
                     no_wrap=col in ("count/max", "fill"))
    for ns in doc["namespaces"]:
        stats, rates = ns["stats"], ns["rates"] or {}

        def sr(k, stats=stats, rates=rates):
            v = stats.get(k)
            if v is None:
                return "?"
            r = rates.get(k)
            return f"{v}" + (f" [dim]({r:g}/s)[/]" if r else "")

        mem = ns["memory"]
        t.add_row(
            ns["name"],
            f"{ns['count'] if ns['count'] is not None else '?'} / {ns['max'] if ns['max'] is not None else '?'}",
            fill_bar(ns["fill"], 9) + (f" {ns['fill'] * 100:.1f}%" if ns["fill"] is not None else " ?"),
            (human_bytes(mem["bytes"]) + ("~" if mem["estimated"] else "")) if mem else "?",
            sr("drop"), sr("insert_failed"), sr("early_drop"),
        )
    parts.append(t)
    ini = doc["namespaces"][0] if doc["namespaces"] else None
    if ini and ini.get("buckets") and ini.get("max"):
        parts.append(f"[bold]hash[/] {ini['buckets']} buckets for max {ini['max']} "
                     f"(max/buckets {ini['max'] / ini['buckets']:.2f}; buckets and max are global, counts per netns)")
    key = {"nf_conntrack", "nf_nat"}
    mods = [f"{m['name']}: {m['state']}" + (f" (refcnt {m['refcount']}, held by {','.join(m['holders']) or '-'})"
                                          if m["state"] == "loaded" and m["name"] in key else "")
            for m in doc["modules"] if m["state"] != "absent" or m["name"] in key]
    parts.append("[bold]modules[/] " + ("; ".join(mods) if mods else "not enough data"))
    s = doc["settings"]
    if s["non_default"]:
        parts.append("[bold]settings not at the kernel default[/]")
        for d in s["non_default"]:
            parts.append(f"  {d['key']} = {d['value']}  [dim](default {d['default']})[/]")
    if s["drift"]:
        parts.append("[bold yellow]live settings that differ from the persisted ones[/]")
        for d in s["drift"]:
            parts.append(f"  {d['key']}: live {d['live']}, persisted {d['persisted']}  [dim]({d['file']}:{d['line']})[/]")
    if not s["non_default"] and not s["drift"]:
        parts.append("[bold]settings[/] all at kernel defaults; nothing persisted differs from live")
    ev = doc["kernel_log"]["events"]
    if ev:
        parts.append("[bold]kernel log[/] " + ", ".join(f"{k}: {v}" for k, v in ev.items()))
    for n in doc["notes"]:
        parts.append(f"[dim]note: {n}[/]")
    return Group(*parts)


def print_status(doc: dict) -> None:
    from rich.console import Console

    Console(highlight=False).print(render(doc))
