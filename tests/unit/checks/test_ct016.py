"""CT016 NOTRACK without an accept for untracked packets, on plain facts."""

from ctdoctor.diagnose.checks.base import WARNING

from .build import RulesSummary, context, fired, ns, quiet, snapshot, unknown

CODE = "CT016"


def rules(**kw):
    return RulesSummary(sources=["nft -j list ruleset"], notrack=["raw prerouting: udp dport 53 notrack"],
                        ct_state=["filter input: ct state established,related accept"], dialects=["nft"], **kw)


def test_fires_without_an_untracked_accept():
    f = fired(CODE, context(snapshot(ns(rules=rules()))), WARNING)
    assert f.evidence["notrack"] == ["raw prerouting: udp dport 53 notrack"]
    assert f.fix[0] == "nft insert rule inet filter input ct state untracked accept   # adjust family/table/chain"


def test_quiet_with_the_accept():
    quiet(CODE, context(snapshot(ns(rules=rules(untracked_accept=["filter input: ct state untracked accept"])))))


def test_missing_rules_is_not_enough_data():
    assert "no firewall rules" in unknown(CODE, context(snapshot(ns()))).reason
