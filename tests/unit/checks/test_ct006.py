"""CT006 settings drift, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING
from ctdoctor.model.kernel import NF
from ctdoctor.model.persisted import SysctlSetting

from .build import Persisted, context, fired, ns, quiet, snapshot

CODE = "CT006"


def persisted(key: str, value: str) -> Persisted:
    return Persisted(sysctl={NF + key: SysctlSetting(NF + key, value, "/etc/sysctl.d/90-ct.conf", 3)})


def test_fires_when_a_persisted_value_was_lost():
    f = fired(CODE, context(snapshot(ns(), persisted=persisted("nf_conntrack_max", "524288"))), WARNING, netns=None)
    assert f.evidence["drift"][0] == {"key": NF + "nf_conntrack_max", "live": "262144", "persisted": "524288",
                                      "source": "/etc/sysctl.d/90-ct.conf:3"}
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_max=524288"


def test_a_max_raised_at_run_time_is_information():
    f = fired(CODE, context(snapshot(ns(), persisted=persisted("nf_conntrack_max", "131072"))), INFO, netns=None)
    assert f.fix[0].startswith("ctdoctor apply --max 262144")


def test_quiet_when_live_is_persisted():
    quiet(CODE, context(snapshot(ns(), persisted=persisted("nf_conntrack_max", "262144"))))


def test_missing_persisted_config_says_nothing():
    quiet(CODE, context(snapshot(ns())))
