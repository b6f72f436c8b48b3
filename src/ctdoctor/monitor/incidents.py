"""The incidents ``record`` captured, read back for ``ctdoctor incidents``: one row per bundle.

The folder is untrusted: a bundle anyone could have written there is read within limits
(``sources.incident.read_incident``), every value taken from it is checked for its type, and every
text is made inert (no rich markup or terminal escapes). A bad bundle is a row with its reason; it
never stops the listing.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ctdoctor.errors import InputError
from ctdoctor.model.textsafe import clean
from ctdoctor.monitor.record import bundles, not_bundles
from ctdoctor.sources.incident import read_incident


def _text(v: Any, limit: int = 256) -> str | None:
    return clean(v, limit) if isinstance(v, str) else None


def _number(v: Any, lo: float = 0.0, hi: float = math.inf) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        return None
    return v


def _first(doc: Any, *keys: str) -> dict[str, Any] | None:
    """doc[k1][k2][0] when each step has the right shape, else None."""
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return doc[0]
    return None


def _pod(p: Any) -> str | None:
    """``namespace/name`` of the pod an incident names (incident.json is untrusted: strings only)."""
    if not isinstance(p, dict) or not isinstance(p.get("name"), str):
        return None
    ns = p.get("namespace") if isinstance(p.get("namespace"), str) else ""
    return _text(f"{ns}/{p['name']}" if ns else p["name"], 128)


def collect_rows(d: str) -> list[dict[str, Any]]:
    """A row per bundle in ``d`` (oldest first), then one per file there that is not a bundle."""
    rows: list[dict[str, Any]] = []
    for name, size in bundles(d):
        path = os.path.join(d, name)
        row: dict[str, Any] = {"bundle": path, "size": size}
        try:
            inc = read_incident(path)
        except InputError as e:
            row["error"] = _text(str(e), 300)
            rows.append(row)
            continue
        top, rate = _first(inc, "top", "src"), _first(inc, "rates", "src")
        row.update({
            "time": _text(inc.get("time"), 32), "netns": _text(inc.get("netns"), 128), "pod": _pod(inc.get("pod")),
            "trigger": _text(inc.get("trigger"), 32), "detail": _text(inc.get("detail"), 300),
            "peak_fill": _number(inc.get("peak_fill"), 0, 100),
            "top_source": _text(top.get("key"), 64) if top else None,
            "top_source_share": _number(top.get("share"), 0, 1) if top else None,
            "top_new_source": _text(rate.get("key"), 64) if rate else None,
            "top_new_source_rate": _number(rate.get("rate")) if rate else None,
        })
        rows.append(row)
    for name, what in not_bundles(d):
        rows.append({"bundle": os.path.join(d, name), "size": None, "error": f"{name}: {what}: not read"})
    return rows
