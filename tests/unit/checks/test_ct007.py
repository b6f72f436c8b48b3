"""CT007 unload hazard, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING
from ctdoctor.model.kernel import NF
from ctdoctor.model.persisted import SysctlSetting

from .build import Persisted, RulesSummary, context, fired, ns, quiet, snapshot

CODE = "CT007"
CFG = "/etc/sysconfig/iptables-config"


def persisted(cfg: dict) -> Persisted:
    key = NF + "nf_conntrack_max"
    return Persisted(sysctl={key: SysctlSetting(key, "262144", "/etc/sysctl.conf", 1)}, iptables_config={CFG: cfg})


def test_fires_when_the_service_unloads_conntrack():
    snap = snapshot(ns(rules=RulesSummary(sources=["iptables-save"])), persisted=persisted({}))
    f = fired(CODE, context(snap), WARNING, netns=None)
    assert f.evidence["IPTABLES_MODULES_UNLOAD"] == "yes" and f.evidence["persisted_settings"] == [
        NF + "nf_conntrack_max"]
    assert f.fix[0].startswith("sed -i 's/^#\\?IPTABLES_SYSCTL_LOAD_LIST=") and f.fix[0].endswith(CFG)


def test_builtin_conntrack_is_information():
    snap = snapshot(ns(), persisted=persisted({}), modules={"nf_conntrack": "builtin"})
    assert fired(CODE, context(snap), INFO, netns=None).evidence["builtin"] is True


def test_quiet_with_the_load_list():
    quiet(CODE, context(snapshot(ns(), persisted=persisted({"IPTABLES_SYSCTL_LOAD_LIST": ".nf_conntrack"}))))


def test_missing_config_says_nothing():
    quiet(CODE, context(snapshot(ns())))
