"""Strings from an image are untrusted: capped and stripped of control characters before
they reach a report (a 1 MB hostname made rich's highlighter take minutes; a NUL byte in
osrelease broke JSON consumers)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str | None, limit: int = 256) -> str:
    """One line of printable text, at most ``limit`` characters (``…`` marks a cut)."""
    if not text:
        return ""
    t = text.strip().splitlines()[0] if text.strip() else ""
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return _CONTROL.sub("?", t)
