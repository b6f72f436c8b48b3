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
from typing import Any

from ctdoctor.model.rules import FwRule, RulesSummary

NAT_WORDS = ("dnat", "snat", "masquerade", "redirect")


class RulesParseError(ValueError):
    pass


def _ports(text: str) -> frozenset[int] | None:
    """Ports of ``53``, ``53,5353``, ``1000:2000`` (small ranges), ``{ 53, 5353 }``."""
    out: set[int] = set()
    for part in re.split(r"[,\s{}]+", text.strip()):
        if not part:
            continue
        a, sep, b = part.replace("-", ":").partition(":")
        if not a.isdigit() or (sep and not b.isdigit()):
            return None
        lo, hi = int(a), int(b) if sep else int(a)
        if hi - lo > 4096:
            return None
        out.update(range(lo, hi + 1))
    return frozenset(out) if out else None


def _states(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in re.split(r"[,\s{}]+", text) if w)


# matches a rule may carry that we do not model: a rule with them may match, but does not surely match
_IPT_CONDITIONS = re.compile(r"\s(-s|-d|-i|-o|--source|--destination|--in-interface|--out-interface|-m limit|"
                             r"-m hashlimit|-m recent|-m connlimit|-m mark|--mark|-m set|--match-set|-m string|"
                             r"-m owner|-m addrtype|!)\s")
_NFT_CONDITIONS = re.compile(r"\b(saddr|daddr|iifname|oifname|iif|oif|limit|meter|ct count|mark|@\w+|"
                             r"quota|skuid|skgid|fib)\b")


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
            _nft_json_rule(s, obj["rule"])
    return s


def _nft_json_rule(s: RulesSummary, r: dict[str, Any]) -> None:
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


# What must not be read as a NAT statement: strings, comments, sets ({ nd-redirect, ... }) and
# match values (`icmp type redirect`, `icmpv6 type nd-redirect`).
_NOT_STATEMENTS = re.compile(r'"[^"]*"|\{[^}]*\}|\b(?:type|code)\s+[\w-]+|\bcomment\s+\S+')
_NFT_NAT = re.compile(r"(?:^|\s)(?:(?:dnat|snat)(?:\s+ip6?)?\s+to\b|masquerade\b|redirect\b(?!-))")


def parse_nft_text(text: str, source: str) -> RulesSummary:
    s = RulesSummary(sources=[source], dialects=["nft"])
    table = chain = hook = ""
    for n, ln in enumerate(text.splitlines(), 1):
        t = ln.strip()
        m = re.match(r"table (\S+) (\S+)", t)
        if m:
            table = f"{m.group(1)} {m.group(2)}"
            continue
        m = re.match(r"chain (\S+)", t)
        if m:
            chain, hook = m.group(1), ""
            continue
        where = f"{table} {chain} line {n}"
        if re.search(r"\btype nat hook\b", t):
            s.nat_chains.append(f"{table} {chain}")
            continue
        m = re.match(r"type (\w+) hook (\w+)", t)
        if m:
            hook = m.group(2) if m.group(1) == "filter" else ""
            pol = re.search(r"\bpolicy (accept|drop)\b", t)
            if pol:
                s.policies[f"{table} {chain}"] = pol.group(1)
            continue
        stmt = _NOT_STATEMENTS.sub(" ", t)
        if _NFT_NAT.search(stmt):
            s.nat.append(where)
        if re.search(r"\bnotrack\b", t):
            s.notrack.append(where)
        if re.search(r"\bqueue\b", t) and not t.startswith("type"):
            s.nfqueue.append(where)
        st = re.search(r"\bct state (\{[^}]*\}|\S+)", t)
        if st:
            s.ct_state.append(where)
            # SYNPROXY recipes hand untracked SYNs to synproxy: they are handled, not dropped
            if "untracked" in t and re.search(r"\b(accept|synproxy)\b", t):
                s.untracked_accept.append(where)
        if re.search(r"\bct helper\b", t):
            s.helpers.append(where)
        if t and not t.startswith(("}", "#", "set ", "map ", "elements", "type ", "policy", "flags", "counter packets")):
            s.rules.append(_nft_rule(f"{table} {chain}", hook, t, where, st.group(1) if st else None))
    return s


def _nft_rule(chain: str, hook: str, t: str, where: str, states: str | None) -> FwRule:
    body = re.sub(r"\s*(comment \"[^\"]*\"|# handle \d+)\s*$", "", t)
    last = re.findall(r"\b(accept|drop|reject|notrack|jump|goto|return|queue|log|counter)\b", body)
    verdict = next((w for w in reversed(last) if w in ("accept", "drop", "reject", "notrack", "jump", "goto")), "")
    action = {"goto": "jump"}.get(verdict, verdict) or "other"
    proto = re.search(r"\b(tcp|udp|sctp)\s+(?:dport|sport|flags)|\bl4proto\s+(tcp|udp|sctp)\b|"
                      r"\bip6? (?:protocol|nexthdr) (tcp|udp|sctp)\b", body)
    dport = re.search(r"\bdport\s+(\{[^}]*\}|[\d-]+)", body)
    return FwRule(chain, action, next((g for g in proto.groups() if g), None) if proto else None,
                  _ports(dport.group(1).replace("-", ":")) if dport else None,
                  _states(states) if states else None, hook, where, bool(_NFT_CONDITIONS.search(body)))


def parse_iptables_save(text: str, source: str) -> RulesSummary:
    s = RulesSummary(sources=[source], dialects=["iptables"])
    table = ""
    for n, ln in enumerate(text.splitlines(), 1):
        t = ln.strip()
        if t.startswith("*"):
            table = t[1:]
            continue
        m = re.match(r"^:(\S+)\s+(ACCEPT|DROP)\b", t)
        if m:
            s.policies[f"{table} {m.group(1)}"] = m.group(2).lower()
            continue
        # iptables-save -c (IPTABLES_SAVE_COUNTER=yes) puts "[packets:bytes]" before each rule
        t = re.sub(r"^\[\d+:\d+\]\s+", "", t)
        if not t.startswith("-A "):
            continue
        where = f"{source}:{n} ({table})"
        s.rules.append(_ipt_rule(table, t, where))
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


def _ipt_rule(table: str, t: str, where: str) -> FwRule:
    """An ``-A CHAIN ...`` line of iptables-save as an FwRule."""
    chain = t.split()[1]
    target = re.search(r"\s-[jg]\s+(\S+)", t)
    tgt = target.group(1) if target else ""
    action = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "NOTRACK": "notrack"}.get(tgt, "")
    if tgt == "CT" and "--notrack" in t:
        action = "notrack"
    if not action:
        action = "other" if tgt in ("", "LOG", "MARK", "CONNMARK", "DNAT", "SNAT", "MASQUERADE", "RETURN",
                                    "REDIRECT", "CT", "TCPMSS", "CHECKSUM") else "jump"
    proto = re.search(r"\s-p\s+(\w+)", t)
    dport = re.search(r"--dports?\s+(\S+)", t)
    states = re.search(r"--(?:ct)?state\s+(\S+)", t)
    return FwRule(f"{table} {chain}", action, proto.group(1).lower() if proto else None,
                  _ports(dport.group(1)) if dport else None, _states(states.group(1)) if states else None,
                  {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output", "PREROUTING": "prerouting"}.get(chain, ""),
                  where, bool(_IPT_CONDITIONS.search(" " + t + " ")) or (bool(dport) and "!" in t))


def parse_iptables_list(text: str, source: str) -> RulesSummary:
    """``iptables [-t T] [-v] -nL`` tables, read by the header's column names: the target, the
    protocol, and the options after the destination column (``udp dpt:53``, ``ctstate
    RELATED,ESTABLISHED``, ``NOTRACK`` for ``CT --notrack``); any case."""
    s = RulesSummary(sources=[source], dialects=["iptables"])
    table = "raw" if "_raw_" in source or "-t raw" in source else "nat" if "_nat_" in source or "-t nat" in source \
        else "mangle" if "_mangle_" in source else "filter"
    chain, cols = "", []
    for n, ln in enumerate(text.splitlines(), 1):
        p = ln.split()
        if not p:
            continue
        if p[0] == "Chain" and len(p) > 1:
            chain = p[1]
            m = re.search(r"\(policy (\w+)", ln)
            if m:
                s.policies[f"{table} {chain}"] = m.group(1).lower()
            continue
        if "target" in p and "prot" in p:
            cols = p
            continue
        if not cols or len(p) < len(cols) - 1:
            continue
        row = dict(zip(cols, p, strict=False))
        # a rule with no target (a counting rule) has one column less: the protocol comes first then
        if row.get("target", "").lower() in ("all", "tcp", "udp", "icmp", "0", "6", "17"):
            p = [*p[:cols.index("target")], "", *p[cols.index("target"):]]
            row = dict(zip(cols, p, strict=False))
        opts = " ".join(p[len(cols):])
        target = row.get("target", "")
        words = {target.upper()}
        where = f"{source}:{n}"
        upper = opts.upper()
        if words & {"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"}:
            s.nat.append(where)
        notrack = target.upper() == "NOTRACK" or (target.upper() == "CT" and re.search(r"\bNOTRACK\b", upper))
        if notrack:
            s.notrack.append(where)
        if words & {"NFQUEUE", "QUEUE"}:
            s.nfqueue.append(where)
        st = re.search(r"\b(?:ctstate|state)\s+(\S+)", opts, re.IGNORECASE)
        if st:
            s.ct_state.append(where)
            if "UNTRACKED" in st.group(1).upper() and words & {"ACCEPT", "SYNPROXY"}:
                s.untracked_accept.append(where)
        action = "notrack" if notrack else {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}.get(
            target.upper(), "other" if target.upper() in ("", "LOG", "MARK", "RETURN", "CT") or (target.isupper() and
            target in ("DNAT", "SNAT", "MASQUERADE", "REDIRECT", "CONNMARK", "TCPMSS")) else "jump")
        prot = row.get("prot", "all").lower()
        dpt = re.search(r"\bdpts?:(\S+)", opts) or re.search(r"\bmultiport dports (\S+)", opts)
        src, dst = row.get("source", "0.0.0.0/0"), row.get("destination", "0.0.0.0/0")
        anywhere = ("0.0.0.0/0", "::/0", "anywhere")
        cond = src not in anywhere or dst not in anywhere or any(row.get(c, "*") not in ("*", "any")
                                                                  for c in ("in", "out")) \
            or bool(re.search(r"\b(limit|recent|connlimit|mark|match-set|STRING|owner|ADDRTYPE)\b", opts, re.IGNORECASE))
        s.rules.append(FwRule(f"{table} {chain}", action, None if prot in ("all", "0") else prot,
                              _ports(dpt.group(1)) if dpt else None,
                              _states(st.group(1)) if st else None,
                              {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
                               "PREROUTING": "prerouting"}.get(chain, ""), where, cond))
    return s
