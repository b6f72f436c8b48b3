"""CT008 modprobe.d stops conntrack from loading, on plain facts."""

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING
from ctdoctor.model.persisted import ModprobeDirective

from .build import Persisted, RulesSummary, context, fired, ns, quiet, snapshot

CODE = "CT008"
TRAP = Persisted(modprobe=[ModprobeDirective("install", "nf_conntrack", "/bin/true", "/etc/modprobe.d/x.conf", 4)])
NAT = RulesSummary(sources=["iptables-save"], nat=["-A POSTROUTING -j MASQUERADE"])


def test_fires_critical_when_nat_depends_on_it():
    f = fired(CODE, context(snapshot(ns(rules=NAT), persisted=TRAP)), CRITICAL, netns=None)
    assert f.evidence["lines"][0] == {"file": "/etc/modprobe.d/x.conf", "line": 4,
                                      "text": "install nf_conntrack /bin/true"}
    assert f.fix[0] == "sed -i '4s/^/# disabled by ctdoctor advice: /' /etc/modprobe.d/x.conf"


def test_no_rule_needs_it_or_builtin_is_information():
    fired(CODE, context(snapshot(ns(rules=RulesSummary(sources=["nft"])), persisted=TRAP)), INFO, netns=None)
    fired(CODE, context(snapshot(ns(rules=NAT), persisted=TRAP, modules={"nf_conntrack": "builtin"})), INFO,
          netns=None)


def test_quiet_without_such_a_line():
    quiet(CODE, context(snapshot(ns(rules=NAT))))


def test_missing_rules_is_a_warning_not_a_guess():
    fired(CODE, context(snapshot(ns(), persisted=TRAP)), WARNING, netns=None)
