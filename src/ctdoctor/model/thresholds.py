"""The thresholds every check, screen, recorder and alert rule shares (one place).

Table fill: WARNING at 80 %, CRITICAL at 95 % or when the netns is dropping
(docs/design.md, "Severity policy"). A site that wants other values sets them once, for every command,
in the environment: ``CTDOCTOR_FILL_WARNING=0.85 CTDOCTOR_FILL_CRITICAL=0.97``
(fractions of ``nf_conntrack_max``). ``contrib/prometheus/ctdoctor.rules.yml``
carries the defaults; a test holds the two equal.

"Under pressure" is what turns an observation about the table's contents
(state mix, one source's share, hash sizing) into something worth a person's
attention: the table is at the warning fill, or it is dropping.
"""

from __future__ import annotations

import os

DEFAULT_FILL_WARNING = 0.80
DEFAULT_FILL_CRITICAL = 0.95
# Kernel log lines older than this before the capture are history: reported, never paged on.
STALE_SECONDS = 30 * 86400


def _fraction(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        v = float(raw)
    except ValueError:
        return default
    return v if 0 < v <= 1 else default


FILL_WARNING = _fraction("CTDOCTOR_FILL_WARNING", DEFAULT_FILL_WARNING)
FILL_CRITICAL = max(_fraction("CTDOCTOR_FILL_CRITICAL", DEFAULT_FILL_CRITICAL), FILL_WARNING)


def fill_severity(fill: float | None, dropping: bool) -> str | None:
    """'critical', 'warning' or None for a netns at this fill (count / max)."""
    if fill is None:
        return None
    if fill >= FILL_CRITICAL or (fill >= FILL_WARNING and dropping):
        return "critical"
    if fill >= FILL_WARNING:
        return "warning"
    return None


def under_pressure(fill: float | None, dropping: bool) -> bool:
    """A table worth worrying about: at the warning fill, or dropping now."""
    return dropping or (fill is not None and fill >= FILL_WARNING)
