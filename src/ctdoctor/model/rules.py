"""Firewall rules, summarised for what conntrack cares about, as data (parsed by ``sources.firewall``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FwRule:
    """One rule, as far as conntrack cares: what it matches (protocol, destination ports, ct states;
    None is "any") and what it does. ``chain`` is ``FAMILY TABLE CHAIN`` (nft) or ``TABLE CHAIN``."""

    chain: str
    action: str  # accept | drop | reject | notrack | jump | other
    proto: str | None = None
    dports: frozenset[int] | None = None
    states: frozenset[str] | None = None  # lower case: established, related, new, invalid, untracked
    hook: str = ""  # input | forward | output | prerouting | ... ('' unknown)
    where: str = ""
    conditional: bool = False  # carries a match we do not model (addresses, rate limits, interfaces, marks)

    def may_match(self, proto: str | None, ports: frozenset[int] | None, state: str) -> bool:
        """Could this rule match an untracked packet of ``proto``/``ports``?"""
        if self.states is not None and state not in self.states:
            return False
        if self.proto is not None and proto is not None and self.proto != proto:
            return False
        return not (self.dports is not None and ports is not None and not ports & self.dports)

    def surely_matches(self, proto: str | None, ports: frozenset[int] | None, state: str) -> bool:
        """Does it match every untracked packet of ``proto``/``ports`` (an accept that covers them)?"""
        if self.conditional or (self.states is not None and state not in self.states):
            return False
        if self.proto is not None and self.proto != proto:
            return False
        return self.dports is None or (ports is not None and ports <= self.dports)


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
    rules: list[FwRule] = field(default_factory=list)  # in order, every table (the order CT016 follows)
    policies: dict[str, str] = field(default_factory=dict)  # chain -> accept | drop
    dialects: list[str] = field(default_factory=list)  # nft | iptables: how fixes are written

    def merge(self, other: RulesSummary) -> None:
        for k in ("sources", "nat", "notrack", "nfqueue", "ct_state", "untracked_accept", "helpers", "nat_chains",
                  "rules"):
            getattr(self, k).extend(getattr(other, k))
        self.policies.update(other.policies)
        self.dialects.extend(d for d in other.dialects if d not in self.dialects)

    @property
    def seen(self) -> bool:
        return bool(self.sources)

    def as_dict(self) -> dict[str, object]:
        return {
            "sources": self.sources,
            "nat": len(self.nat) + len(self.nat_chains),
            "notrack": len(self.notrack),
            "nfqueue": len(self.nfqueue),
            "ct_state": len(self.ct_state),
            "untracked_accept": len(self.untracked_accept),
            "helpers": len(self.helpers),
        }
