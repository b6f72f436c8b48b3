"""A table laid out for the width it has: every column as wide as its widest cell, numbers right-aligned,
the flexible column (a name) elided in the middle, optional columns dropped (lowest ``optional`` first)
when the width has no room for them, never a cell cut to ``m…`` and never a line wider than the width.

Rich's Table shares the room out by ratios and cuts cells; this one decides which columns to show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ctdoctor.render.fmt import elide

if TYPE_CHECKING:
    from rich.text import Text

GAP = 2


@dataclass
class Column:
    header: str
    cells: list[str]
    align: str = "right"
    flex: bool = False  # shares what is left (the widest gives first), elided in the middle
    min_width: int = 0
    optional: int = 0  # 0: always shown; else dropped when there is no room, lowest first
    alt: list[str] | None = None  # richer cells (a count with its rate), used when they fit
    styles: list[str] | None = None
    markup: bool = False  # cells carry rich markup (a coloured bar)
    fixed: int = 0  # a width fixed whatever the cells say
    name: str = ""

    @property
    def key(self) -> str:
        return self.name or self.header


def _plain_len(cell: str, markup: bool) -> int:
    from rich.cells import cell_len
    from rich.text import Text

    return cell_len(Text.from_markup(cell).plain if markup else cell)


def _natural(c: Column, cells: list[str]) -> int:
    if c.fixed:
        return max(c.fixed, len(c.header))
    return max([len(c.header), *(_plain_len(x, c.markup) for x in cells)])


def _fit(cols: list[Column], chosen: dict[str, list[str]], width: int, memory: dict[str, int] | None,
         gap: int, strict: bool = False) -> dict[str, int] | None:
    """Column widths that fit ``width`` with these cells, or None."""
    widths = {}
    for c in cols:
        w = _natural(c, chosen[c.key])
        if memory is not None and not c.flex:
            w = max(w, memory.get(c.key, 0))
        widths[c.key] = w
    fixed = sum(widths[c.key] for c in cols if not c.flex) + gap * (len(cols) - 1)
    flex = [c for c in cols if c.flex]
    if flex:
        room = width - fixed
        need = {c.key: widths[c.key] if strict else max(c.min_width, len(c.header)) for c in flex}
        if room < sum(need.values()):
            return None
        if memory is not None:  # the name columns keep their width too, within the room
            for c in flex:
                widths[c.key] = max(widths[c.key], memory.get(c.key, 0))
        while sum(widths[c.key] for c in flex) > room:  # the widest one gives a cell first
            c = max((c for c in flex if widths[c.key] > need[c.key]), key=lambda c: widths[c.key])
            widths[c.key] -= 1
    if sum(widths.values()) + gap * (len(cols) - 1) > width:
        return None
    return widths


# the columns shown, their cells by column, their widths, the gap between them
Choice = tuple[list[Column], dict[str, list[str]], dict[str, int], int]


def _choose(cols: list[Column], width: int, memory: dict[str, int] | None) -> Choice:
    """The columns shown, their cells and widths, and the gap between them."""
    # first every name whole (optional columns dropped for it), then names elided, then one space between
    for gap, strict in ((GAP, True), (GAP, False), (1, False)):
        # once a name must be elided, the optional columns have lost: a name matters more than they do
        shown = list(cols) if strict else [c for c in cols if not c.optional]
        use_alt = any(c.alt for c in cols)
        while True:
            chosen = {c.key: (c.alt if use_alt and c.alt else c.cells) for c in shown}
            widths = _fit(shown, chosen, width, memory, gap, strict)
            if widths is not None:
                return shown, chosen, widths, gap
            if use_alt:
                use_alt = False
                continue
            opt = [c for c in shown if c.optional]
            if not opt:
                break
            shown.remove(min(opt, key=lambda c: c.optional))
    # nothing fits: the required columns, the names cut to what is left
    chosen = {c.key: c.cells for c in shown}
    widths = {c.key: _natural(c, chosen[c.key]) for c in shown}
    for c in shown:
        if c.flex:
            others = sum(w for k, w in widths.items() if k != c.key) + (len(shown) - 1)
            widths[c.key] = max(4, min(widths[c.key], width - others))
    return shown, chosen, widths, 1


def _cell(line: Text, c: Column, cell: str, w: int, style: str) -> None:
    from rich.text import Text

    if c.markup:
        t = Text.from_markup(cell)
        t.truncate(w, pad=True)
        line.append_text(t)
        return
    cell = elide(cell, w) if c.flex else cell
    pad = " " * max(0, w - _plain_len(cell, False))
    if c.align == "right":
        line.append(pad)
        line.append(cell, style=style)
    else:
        line.append(cell, style=style)
        line.append(pad)


def layout(cols: list[Column], width: int, memory: dict[str, int] | None = None) -> list[Text]:
    """The table as rich Text lines: the header, a rule, one line per row."""
    from rich.text import Text

    shown, chosen, widths, gap = _choose(cols, max(width, 20), memory)
    if memory is not None:
        for c in shown:
            memory[c.key] = max(memory.get(c.key, 0), widths[c.key])
    head = Text(style="bold")
    for i, c in enumerate(shown):
        head.append(" " * gap if i else "")
        head.append(c.header.rjust(widths[c.key]) if c.align == "right" else c.header.ljust(widths[c.key]))
    lines = [_rstrip(head), Text("─" * min(width, sum(widths.values()) + gap * (len(shown) - 1)), style="dim")]
    for r in range(len(cols[0].cells) if cols else 0):
        line = Text()
        for i, c in enumerate(shown):
            line.append(" " * gap if i else "")
            _cell(line, c, chosen[c.key][r], widths[c.key], c.styles[r] if c.styles else "")
        lines.append(_rstrip(line))
    return lines


def _rstrip(t: Text) -> Text:
    t.rstrip()
    t.no_wrap = True
    t.overflow = "ignore"
    return t
