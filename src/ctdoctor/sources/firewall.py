"""Firewall rules, summarised for what conntrack cares about.

Reads ``nft -j list ruleset`` (JSON), the text of ``nft [-a] list ruleset``
that sosreport keeps, ``iptables-save`` / ``/etc/sysconfig/iptables`` and the
``iptables -t nat -nvL`` tables sosreport captures. The summary answers:
is there NAT, NOTRACK, NFQUEUE, a ``ct state`` match, an ``untracked`` accept,
a conntrack helper?
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

NAT_WORDS = ("dnat", "snat", "masquerade", "redirect")


@dataclass
class RulesSummary:
    sources: list[str] = field(default_factory=list)
    nat: list[str] = field(default_factory=list)  # evidence lines
    notrack: list[str] = field(default_factory=list)
    nfqueue: list[str] = field(default_factory=list)
    ct_state: list[str] = field(default_factory=list)
    untracked_accept: list[str] = field(default_factory=list)
    helpers: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)  # base chains of type nat

    def merge(self, other: RulesSummary) -> None:
        for k in ("sources", "nat", "notrack", "nfqueue", "ct_state", "untracked_accept", "helpers", "nat_chains"):
            getattr(self, k).extend(getattr(other, k))

    @property
    def seen(self) -> bool:
        return bool(self.sources)

    def as_dict(self) -> dict:
        return {
            "sources": self.sources,
            "nat": len(self.nat) + len(self.nat_chains),
            "notrack": len(self.notrack),
            "nfqueue": len(self.nfqueue),
            "ct_state": len(self.ct_state),
            "untracked_accept": len(self.untracked_accept),
            "helpers": len(self.helpers),
        }


class RulesParseError(ValueError):
    pass


def parse_nft_json(text: str, source: str) -> RulesSummary:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise RulesParseError(f"{source}: not nft JSON ({e})") from None
    if not isinstance(doc, dict) or "nftables" not in doc:
        raise RulesParseError(f"{source}: no 'nftables' key")
    s = RulesSummary(sources=[source])
    for obj in doc["nftables"]:
        if not isinstance(obj, dict):
            continue
        if "chain" in obj:
            c = obj["chain"]
            if c.get("type") == "nat":
                s.nat_chains.append(f"{c.get('family')} {c.get('table')} {c.get('name')} (nat hook {c.get('hook')})")
        elif "ct helper" in obj:
            s.helpers.append(f"ct helper {obj['ct helper'].get('name')}")
        elif "rule" in obj:
            r = obj["rule"]
            exprs = r.get("expr", [])
            flat = json.dumps(exprs)
            where = f"{r.get('family')} {r.get('table')} {r.get('chain')} handle {r.get('handle')}"
            keys: set[str] = set()
            for ex in exprs:
                if isinstance(ex, dict):
                    keys.update(ex.keys())
            if keys & set(NAT_WORDS):
                s.nat.append(where)
            if "notrack" in keys:
                s.notrack.append(where)
            if "queue" in keys:
                s.nfqueue.append(where)
            if '"ct": {"key": "state"' in flat:
                s.ct_state.append(where)
                if "untracked" in flat and "accept" in keys:
                    s.untracked_accept.append(where)
            if '"ct helper"' in flat or '"helper"' in flat:
                s.helpers.append(where)
    return s


# What must not be read as a NAT statement: strings, comments, sets ({ nd-redirect, ... }) and
# match values (`icmp type redirect`, `icmpv6 type nd-redirect`).
_NOT_STATEMENTS = re.compile(r'"[^"]*"|\{[^}]*\}|\b(?:type|code)\s+[\w-]+|\bcomment\s+\S+')
_NFT_NAT = re.compile(r"(?:^|\s)(?:(?:dnat|snat)(?:\s+ip6?)?\s+to\b|masquerade\b|redirect\b(?!-))")


def parse_nft_text(text: str, source: str) -> RulesSummary:
    s = RulesSummary(sources=[source])
    table = chain = ""
    for n, ln in enumerate(text.splitlines(), 1):
        t = ln.strip()
        m = re.match(r"table (\S+) (\S+)", t)
        if m:
            table = f"{m.group(1)} {m.group(2)}"
            continue
        m = re.match(r"chain (\S+)", t)
        if m:
            chain = m.group(1)
            continue
        where = f"{table} {chain} line {n}"
        if re.search(r"\btype nat hook\b", t):
            s.nat_chains.append(f"{table} {chain}")
            continue
        stmt = _NOT_STATEMENTS.sub(" ", t)
        if _NFT_NAT.search(stmt):
            s.nat.append(where)
        if re.search(r"\bnotrack\b", t):
            s.notrack.append(where)
        if re.search(r"\bqueue\b", t) and not t.startswith("type"):
            s.nfqueue.append(where)
        if re.search(r"\bct state\b", t):
            s.ct_state.append(where)
            # SYNPROXY recipes hand untracked SYNs to synproxy: they are handled, not dropped
            if "untracked" in t and re.search(r"\b(accept|synproxy)\b", t):
                s.untracked_accept.append(where)
        if re.search(r"\bct helper\b", t):
            s.helpers.append(where)
    return s


def parse_iptables_save(text: str, source: str) -> RulesSummary:
    s = RulesSummary(sources=[source])
    table = ""
    for n, ln in enumerate(text.splitlines(), 1):
        t = ln.strip()
        if t.startswith("*"):
            table = t[1:]
            continue
        # iptables-save -c (IPTABLES_SAVE_COUNTER=yes) puts "[packets:bytes]" before each rule
        t = re.sub(r"^\[\d+:\d+\]\s+", "", t)
        if not t.startswith("-A "):
            continue
        where = f"{source}:{n} ({table})"
        if re.search(r"-j (DNAT|SNAT|MASQUERADE|REDIRECT|NETMAP)\b", t):
            s.nat.append(where)
        if re.search(r"-j NOTRACK\b|-j CT\b.*--notrack", t):
            s.notrack.append(where)
        if re.search(r"-j N?F?QUEUE\b", t):
            s.nfqueue.append(where)
        if re.search(r"--(ct)?state\s", t):
            s.ct_state.append(where)
            if "UNTRACKED" in t and re.search(r"-j (ACCEPT|SYNPROXY)\b", t):
                s.untracked_accept.append(where)
        if re.search(r"-j CT\b.*--helper|-m helper", t):
            s.helpers.append(where)
    return s


def parse_iptables_list(text: str, source: str) -> RulesSummary:
    """``iptables [-t T] -vnL`` tables: rows whose target column is DNAT/SNAT/... ."""
    s = RulesSummary(sources=[source])
    for n, ln in enumerate(text.splitlines(), 1):
        p = ln.split()
        if len(p) < 3 or p[0] == "Chain" or p[0] == "pkts":
            continue
        words = set(p[:4])
        where = f"{source}:{n}"
        if words & {"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"}:
            s.nat.append(where)
        if "NOTRACK" in words or ("CT" in words and "notrack" in ln):
            s.notrack.append(where)
        if words & {"NFQUEUE", "QUEUE"}:
            s.nfqueue.append(where)
        if re.search(r"\b(ctstate|state) ", ln):
            s.ct_state.append(where)
            if "UNTRACKED" in ln and words & {"ACCEPT", "SYNPROXY"}:
                s.untracked_accept.append(where)
    return s
