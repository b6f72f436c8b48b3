"""One formatter for every value a person reads: numbers with thousands separators, percentages with
sensible digits, durations, bytes, rates, booleans as yes/no, names elided in the middle. No Python
repr (None, True, {'a': 1}, 3.814697265625e-06) ever reaches the screen through these."""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "?"


def num(v: object) -> str:
    """A count: ``1,048,576``; a float keeps at most 3 significant decimals (``0.25``, ``1,234.5``)."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return yesno(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return MISSING
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:,.3g}" if abs(v) < 10 else f"{v:,.1f}"
        if abs(v) >= 0.001:
            return f"{v:.3f}".rstrip("0").rstrip(".")
        return "< 0.001" if v > 0 else "> -0.001"
    return str(v)


def pct(fraction: float | None, digits: int | None = None) -> str:
    """A fraction as a percentage: ``100%``, ``96.3%``, ``1.4%``, ``0.02%``, ``< 0.01%``, ``0%``."""
    if fraction is None or not math.isfinite(fraction):
        return MISSING
    p = fraction * 100
    if digits is not None:
        return f"{p:.{digits}f}%"
    if p == 0:
        return "0%"
    if 99.95 <= p < 100:
        return "99.9%"  # a table that is not full never reads as full
    if p >= 100:
        return f"{p:.0f}%"
    if p >= 0.1:
        return f"{p:.1f}".removesuffix(".0") + "%"
    if p >= 0.01:
        return f"{p:.2f}%"
    return "< 0.01%"


def size(n: int | float | None) -> str:
    """Bytes in binary units: ``0 B``, ``512 B``, ``19.5 MiB``, ``3.7 GiB``."""
    if n is None:
        return MISSING
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return MISSING  # not reached


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``2m05s``, ``1h02m``, ``5d``, ``3d04h``."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    s = float(seconds)
    if s < 10:
        return f"{s:.1f} s".replace(".0 s", " s")
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d" if h == 0 else f"{d}d{h:02d}h"


def rate(per_second: float | None) -> str:
    """A rate per second, short: ``0``, ``0.2``, ``12``, ``1.2k``, ``3.4M``."""
    if per_second is None or not math.isfinite(per_second):
        return MISSING
    v = per_second
    if v == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}".rstrip("0").rstrip(".") + suffix
    return num(round(v, 1) if abs(v) >= 0.1 else v)


def short(n: int | None) -> str:
    """A count in at most 5 characters: ``950``, ``12k``, ``1.0M``."""
    if n is None:
        return MISSING
    if abs(n) < 10_000:
        return f"{n:,}" if abs(n) < 1000 else f"{n / 1000:.1f}k"
    for div, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= div:
            q = n / div
            return (f"{q:.1f}" if abs(q) < 10 else f"{q:.0f}") + suffix
    return str(n)


def yesno(v: bool | None) -> str:
    return MISSING if v is None else "yes" if v else "no"


def value(v: object) -> str:
    """Any value from a report as a person reads it: lists joined, mappings as ``key value``."""
    if v is None:
        return "unknown"
    if isinstance(v, bool):
        return yesno(v)
    if isinstance(v, (int, float)):
        return num(v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(value(x) for x in v)
    return str(v)


def elide(text: str, room: int) -> str:
    """At most ``room`` cells, cut in the middle (``cni-4f1e…9a2c``): both ends of a name tell it apart."""
    from rich.cells import cell_len

    if cell_len(text) <= room:
        return text
    if room <= 1:
        return "…"[:room]
    left = (room - 1 + 1) // 2
    right = room - 1 - left
    head, tail = text, text
    while cell_len(head) > left:
        head = head[:-1]
    while tail and cell_len(tail) > right:
        tail = tail[1:]
    return head + "…" + (tail if right > 0 else "")


def elide_end(text: str, room: int) -> str:
    """At most ``room`` cells, cut at a word with …, never inside a word when one fits."""
    if len(text) <= room:
        return text
    cut = text[: max(1, room - 1)]
    if " " in cut[room // 2:]:
        cut = cut[: cut.rfind(" ")]
        while " " in cut[room // 2:] and len(cut) - cut.rfind(" ") <= 3:  # no lone "2…" or "a…" at the end
            cut = cut[: cut.rfind(" ")].rstrip(" ,;:")
    return cut.rstrip(" ,;:") + "…"


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 30) -> str:
    """The last ``width`` values as ▁▂▃▄▅▆▇█ (scaled between their min and max; flat is ▁)."""
    vals = [float(v) for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARK[0] * len(vals)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / (hi - lo) * (len(SPARK) - 1) + 0.5))] for v in vals)
