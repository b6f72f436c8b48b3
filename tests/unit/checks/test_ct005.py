"""CT005 NAT without conntrack, on plain facts."""

from ctdoctor.diagnose.checks.base import CRITICAL

from .build import RulesSummary, context, fired, ns, quiet, snapshot, unknown

CODE = "CT005"
NAT = RulesSummary(sources=["nft -j list ruleset"], nat=["ip nat prerouting: dnat to 10.0.0.2"])


def test_fires_when_nf_nat_is_absent():
    snap = snapshot(ns(rules=NAT), modules={"nf_conntrack": "loaded", "nf_nat": "absent"})
    f = fired(CODE, context(snap, distro="debian"), CRITICAL, netns=None)
    assert f.evidence["missing_modules"] == ["nf_nat"]
    assert f.fix[0] == ("ctdoctor recover   # loads nf_defrag_ipv4, nf_conntrack, nf_nat, re-applies settings, "
                        "verifies")
    assert f.fix[-1].startswith("netfilter-persistent reload")


def test_quiet_with_both_loaded_or_no_nat():
    quiet(CODE, context(snapshot(ns(rules=NAT))))
    quiet(CODE, context(snapshot(ns(rules=RulesSummary(sources=["nft"])), modules={"nf_nat": "absent"})))


def test_missing_rules_or_module_list_is_not_enough_data():
    assert "no firewall rules" in unknown(CODE, context(snapshot(ns())), netns=None).reason
    assert "no module list" in unknown(CODE, context(snapshot(ns(rules=NAT), modules={})), netns=None).reason
