"""NOTRACK rules without an accept for untracked packets.

What it detects
    NOTRACK rules (nft ``notrack``, iptables ``-j NOTRACK`` / ``-j CT --notrack``,
    and ``iptables -L``'s ``CT ... NOTRACK``, in any case) whose packets the
    filter would drop: the filter chain is followed in order, as a person reads
    it, and a NOTRACKed protocol/port is fine when a rule accepting it (an
    explicit ``udp dport 53 accept`` with no state condition, or ``ct state
    untracked accept``) comes before any rule that can drop it, or the chain's
    policy accepts. Without the filter chains in the capture, a rule set that
    uses connection state and has no ``untracked`` accept is reported.

Why it matters
    Untracked packets have the state ``untracked``: neither ``new`` nor
    ``established``. A filter that accepts only ``established,related`` and
    drops the rest drops them, so the NOTRACKed service stops answering as
    soon as the notrack rule is added (and it looks like the notrack broke it).

How to fix
    Add the accept next to the established rule, in the firewall this host
    uses: ``nft insert rule inet filter input ct state untracked accept`` or
    ``iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT``.
    ``ctdoctor notrack --port P`` emits both halves together.
"""

from collections.abc import Iterator

from ctdoctor.diagnose.checks.base import WARNING, Context, Finding, Unknown
from ctdoctor.model.rules import RulesSummary

CODE = "CT016"
TITLE = "NOTRACK without an accept for untracked packets"


def run(ctx: Context) -> Iterator[Finding | Unknown]:
    partial = ctx.rules_partial()
    if partial:
        yield Unknown(CODE, f"not enough data: sos stopped its {partial} plugin (timed out, sos_logs/ui.log): the "
                            "firewall rules it captured are incomplete")
        return
    for st in ctx.namespaces:
        r = st.rules
        if not r.seen:
            if st.name == "init":
                yield Unknown(CODE, "not enough data: no firewall rules were readable", st.name)
            continue
        if not r.notrack or r.untracked_accept or not r.ct_state:
            continue
        dropped = _dropped_notracks(r)
        if dropped is not None and not dropped:
            continue  # every NOTRACKed flow meets an accept before anything that can drop it
        fixes = []
        if "nft" in r.dialects or not r.dialects:
            fixes.append("nft insert rule inet filter input ct state untracked accept   # adjust family/table/chain")
        if "iptables" in r.dialects:
            fixes.append("iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT")
        yield Finding(
            CODE, WARNING, TITLE, netns=st.name,
            summary=f"netns {st.label}: {len(r.notrack)} notrack rule(s), {len(r.ct_state)} state rule(s), "
                    "no accept for untracked"
                    + (f": {', '.join(dropped[:3])} would be dropped" if dropped else ""),
            evidence={"notrack": r.notrack[:5], "ct_state": r.ct_state[:5], "sources": r.sources,
                      "dropped": dropped},
            explanation="Packets that skip conntrack have the state 'untracked'. A filter that accepts only "
                        "established/related traffic drops them.",
            fix=fixes,
        )


def _dropped_notracks(r: RulesSummary) -> list[str] | None:
    """The NOTRACKed flows (proto/ports) the input filter would drop, following its rules in order;
    None when the capture holds no input filter chain to follow."""
    notracks = [x for x in r.rules if x.action == "notrack" and x.hook in ("prerouting", "")]
    chains = {x.chain for x in r.rules if x.hook == "input" and x.action != "notrack"
              and (x.chain.endswith(" INPUT") or " " in x.chain)}
    chains |= {c for c in r.policies if c.endswith((" INPUT", " input"))}
    chains = {c for c in chains if not c.startswith(("raw ", "nat ", "mangle "))}
    if not notracks or not chains:
        return None
    out = []
    for nt in notracks:
        label = f"{nt.proto or 'all'}" + (f"/{','.join(str(p) for p in sorted(nt.dports)[:3])}" if nt.dports else "")
        for chain in sorted(chains):
            if _verdict(r, chain, nt.proto, nt.dports) == "drop" and label not in out:
                out.append(label)
    return out


def _verdict(r: RulesSummary, chain: str, proto: str | None, ports: frozenset[int] | None) -> str:
    """accept or drop for an untracked packet walking ``chain`` (rules we cannot model are skipped)."""
    for rule in (x for x in r.rules if x.chain == chain):
        if rule.action == "accept" and rule.surely_matches(proto, ports, "untracked"):
            return "accept"
        if rule.action in ("drop", "reject") and rule.may_match(proto, ports, "untracked"):
            return "drop"
    return "drop" if r.policies.get(chain) == "drop" else "accept"
