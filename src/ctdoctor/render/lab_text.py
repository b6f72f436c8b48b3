"""Text rendering of ``lab list`` and ``lab run``: a scenario's name in its own column, its summary
wrapped between words beside it (never past the width), every observed value through the formatter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctdoctor.render import fmt

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text


def render_list(rows: list[dict[str, Any]], width: int) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False, width=min(width, 120))
    t.add_column("scenario", no_wrap=True)
    t.add_column("what it shows", overflow="fold", ratio=1)
    for r in rows:
        cell = Text(r["summary"])
        cell.append("\n")
        n, _, meaning = str(r["scale"]).partition(" ")
        cell.append(f"default --scale {n}: {meaning}", style="dim")
        if not r["available"]:
            cell.append("\n")
            cell.append(f"cannot run here: {r['why_not']}", style="yellow")
        t.add_row(Text(r["name"], style="bold"), cell)
    return t


def render_run(doc: dict[str, Any], kept: bool, width: int = 80) -> Group:
    from rich.console import Group
    from rich.text import Text

    from ctdoctor.render.wrap import hang  # imports rich: only when a run is rendered

    parts: list[Text] = [Text.assemble(("lab ", "bold"), (doc["scenario"], "bold"), f" in netns {doc['netns']}")]
    parts.append(Text("built", style="bold"))
    for ln in doc["built"]:
        parts.extend(hang(f"- {ln}", width, "  ", "    "))
    parts.append(Text("observed", style="bold"))
    for k, v in doc["observed"].items():
        if isinstance(v, list) and v and isinstance(v[0], str):
            parts.append(Text(f"  {k}:"))
            parts.extend(x for item in v[:10] for x in hang(item, width, "    ", "      "))
        else:
            parts.extend(hang(f"{k}: {fmt.value(v)}", width, "  ", "    "))
    parts.append(Text("why", style="bold"))
    parts.extend(hang(doc["explanation"], width, "  ", "  "))
    parts.extend(hang(f"netns {doc['netns']} " + ("kept; remove it with: ctdoctor lab clean" if kept else "removed"),
                      width))
    return Group(*parts)
