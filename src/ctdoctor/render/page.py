"""A check's page (``explain``) and other prose written for 80 columns, fitted to the terminal: a line
wider than the width is re-wrapped between words with its own indentation; a command line (``$ ...``)
is broken with \\ continuations, never wrapped by the terminal."""

from __future__ import annotations

import textwrap

from ctdoctor.model.fixes import Fix, lines


def fit(text: str, width: int) -> str:
    out: list[str] = []
    for ln in text.splitlines():
        if len(ln) <= width:
            out.append(ln)
            continue
        indent = ln[: len(ln) - len(ln.lstrip())]
        body = ln.lstrip()
        if body.startswith("$ "):
            out.extend(lines(Fix.parse(body[2:]), width, indent + "$ "))
            continue
        hang = indent + ("  " if body[:2] in ("- ", "* ") else "")
        out.extend(textwrap.wrap(body, width, initial_indent=indent, subsequent_indent=hang,
                                 break_long_words=False, break_on_hyphens=False) or [ln])
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def catalogue(rows: list[tuple[str, str]], width: int) -> str:
    """``CT001  title`` per check, a long title wrapped under itself."""
    out: list[str] = []
    for code, title in rows:
        head = f"{code}  "
        out.extend(textwrap.wrap(head + title, width, subsequent_indent=" " * len(head), break_long_words=False,
                                 break_on_hyphens=False) or [code])
    return "\n".join(out) + "\n"


def terminal_width() -> int:
    from rich.console import Console  # rich: 20 ms of imports, for the width alone

    return Console().width
