"""Strings from an image are untrusted: capped and stripped of control characters before
they reach a report (a 1 MB hostname made rich's highlighter take minutes; a NUL byte in
osrelease broke JSON consumers)."""

from __future__ import annotations

import re

# C0/C1 controls (terminal escapes), and the invisible and direction-changing characters that make
# text on a terminal read differently from what it is (zero-width, bidi overrides and isolates)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean(text: str | None, limit: int = 256) -> str:
    """One line of printable text, at most ``limit`` characters (``…`` marks a cut)."""
    if not text:
        return ""
    t = text.strip().splitlines()[0] if text.strip() else ""
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return _CONTROL.sub("?", t)
