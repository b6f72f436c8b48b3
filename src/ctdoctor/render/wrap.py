"""Prose for a terminal: wrapped between words to the width (never inside a word, never a URL or a
path cut), its next lines indented under the first (a hanging indent), a label styled."""

from __future__ import annotations

import textwrap

from rich.text import Text

from ctdoctor.model.fixes import continued, words
from ctdoctor.render import fmt


def hang(text: str, width: int, indent: str = "", more: str | None = None, label: str = "",
         label_style: str = "bold", style: str = "") -> list[Text]:
    """``indent + label + text`` in lines of at most ``width`` (a single word longer than that stays whole),
    the next lines indented by ``more`` (default: two more spaces than ``indent``)."""
    more = indent + "  " if more is None else more
    first = indent + (label + " " if label and text else label)
    lines = textwrap.wrap(first + text, max(20, width), initial_indent="", subsequent_indent=more,
                          break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
    out = []
    for i, ln in enumerate(lines):
        t = Text(style=style)
        if i == 0 and label and ln.startswith(indent + label):
            t.append(indent)
            t.append(label, style=label_style)
            t.append(ln[len(indent) + len(label):])
        else:
            t.append(ln)
        out.append(t)
    return out


def with_source(text: str, source: str | None, width: int, indent: str = "", more: str | None = None) -> list[Text]:
    """``text`` and, dimmed, where it was read: on its last line when it fits, else on a line of its own."""
    lines = hang(text, width, indent, more)
    if not source:
        return lines
    more = indent + "  " if more is None else more
    from ctdoctor.render.fmt import elide

    src = f"({elide(source, max(10, width - len(more) - 2))})"  # a long path: both ends kept
    if len(lines[-1].plain) + 2 + len(src) <= width:
        lines[-1].append("  ")
        lines[-1].append(src, style="dim")
    else:
        lines.append(Text(more + src, style="dim"))
    return lines


def prose(text: str, width: int, indent: str = "", more: str | None = None) -> list[str]:
    """``hang`` as plain strings: ``indent + text`` wrapped between words, the next lines under ``more``."""
    return [t.plain for t in hang(text, width, indent, more)]


def command(cmd: str, width: int, first: str = "", more: str | None = None) -> list[str]:
    """A command the user is to paste, in lines of at most ``width`` where it can: broken only between
    words (a quoted span is one word) with `` \\`` continuations, never wrapped by the terminal; the next
    lines start with ``more`` (default: ``first``'s width and four spaces). A single longer word stays
    whole."""
    more = " " * len(first) + "    " if more is None else more
    return continued(words(cmd) or [cmd], width, first, more)


def commented(cmd: str, note: str, width: int, first: str = "") -> list[str]:
    """``first + cmd   # note`` on one line when it fits, else the note as a comment line above the command
    (a ``\\`` continuation cannot carry a trailing comment), the command broken as ``command`` does."""
    one = f"{first}{cmd}   # {note}"
    if len(one) <= width:
        return [one]
    return [*prose(note, width, first + "# ", first + "#   "), *command(cmd, width, first)]


def items(texts: list[str], width: int) -> list[str]:
    """Short items on as few lines as fit the width, broken between items (never inside one)."""
    out: list[str] = []
    cur = ""
    for item in texts:
        it = fmt.elide(item, width)
        if cur and len(cur) + 2 + len(it) > width:
            out.append(cur)
            cur = it
        else:
            cur = f"{cur}  {it}" if cur else it
    if cur:
        out.append(cur)
    return out
