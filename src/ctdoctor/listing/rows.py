"""A tally as ``top``'s rows: key values, count, share of what was read, state mix, packets/bytes."""

from __future__ import annotations

from typing import Any, TypedDict

from ctdoctor.listing.fields import SEP
from ctdoctor.listing.query import KEYS, NS_KEYS, Query
from ctdoctor.listing.tally import Tally


class Row(TypedDict, total=False):
    """One row of ``top``: its key values, count, share of what was read, state mix, packets/bytes."""

    key: dict[str, Any]
    count: int
    share: float
    states: dict[str, int]
    packets: int
    bytes: int
    rate: float  # top --rate only


def rows(tally: Tally, query: Query, limit: int | None) -> tuple[int, list[Row]]:
    """(number of groups, rows): key, count, share of the listed total, state mix, packets/bytes."""
    if tally.agg is None:
        return 0, []
    groups, top = tally.agg.top(limit or 0)
    total = tally.total or 1
    out: list[Row] = []
    for key, cnt, opk, ob, rpk, rb, labels in top:
        ns = None
        k = key
        if any(k in query.by for k in NS_KEYS):  # merged with the netns (pod, k8s namespace) name in front
            ns_b, _, k = key.partition(SEP)
            ns = ns_b.decode()
        vals = [v.decode("utf-8", "replace") for v in k.split(SEP)] if query.fields() else []
        row: Row = {"key": _key_dict(query, vals, ns), "count": cnt, "share": round(cnt / total, 6),
                    "states": {lab.decode(): n for lab, n in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))}}
        if tally.accounting:
            row["packets"], row["bytes"] = opk + rpk, ob + rb
        out.append(row)
    return groups, out


def _key_dict(query: Query, vals: list[str], ns: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {}
    i = 0
    for k in query.by:
        n = len(KEYS[k])
        part = vals[i:i + n]
        i += n
        if k == "pair":
            key["pair"] = f"{part[0]}→{part[1]}" + (f":{part[2]}" if part[2] else "")
        elif k in NS_KEYS:
            key[k] = ns
        elif k in ("sport", "dport", "zone", "mark"):
            key[k] = int(part[0]) if part[0] else None
        else:
            key[k] = part[0]
    return key
