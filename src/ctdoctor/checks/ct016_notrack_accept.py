"""NOTRACK rules without an accept for untracked packets.

What it detects
    NOTRACK rules (nft ``notrack``, iptables ``-j NOTRACK`` / ``-j CT --notrack``)
    in a rule set whose filter uses connection state (``ct state`` /
    ``--ctstate``) but has no rule accepting ``untracked`` (``ct state untracked
    accept``, ``-m conntrack --ctstate UNTRACKED -j ACCEPT``).

Why it matters
    Untracked packets have the state ``untracked``: neither ``new`` nor
    ``established``. A filter that accepts only ``established,related`` and
    drops the rest drops them, so the NOTRACKed service stops answering as
    soon as the notrack rule is added (and it looks like the notrack broke it).

How to fix
    Add the accept next to the established rule:
    ``nft insert rule inet filter input ct state untracked accept`` or
    ``iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT``.
    ``ctdoctor notrack --port P`` emits both halves together.
"""

from ctdoctor.checks.base import WARNING, Finding, Unknown

CODE = "CT016"
TITLE = "NOTRACK without an accept for untracked packets"


def run(ctx):
    for st in ctx.namespaces:
        r = st.rules
        if not r.seen:
            if st.name == "init":
                yield Unknown(CODE, "not enough data: no firewall rules were readable", st.name)
            continue
        if not r.notrack or r.untracked_accept or not r.ct_state:
            continue
        yield Finding(
            CODE, WARNING, TITLE, netns=st.name,
            summary=f"netns {st.name}: {len(r.notrack)} notrack rule(s), {len(r.ct_state)} state rule(s), "
                    "no accept for untracked",
            evidence={"notrack": r.notrack[:5], "ct_state": r.ct_state[:5], "sources": r.sources},
            explanation="Packets that skip conntrack have the state 'untracked'. A filter that accepts only "
                        "established/related traffic drops them.",
            fix=["nft insert rule inet filter input ct state untracked accept   # adjust family/table/chain",
                 "iptables -I INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT   # iptables rule sets"],
        )
