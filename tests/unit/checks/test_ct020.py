"""CT020 persisted keys this kernel lacks, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING
from ctdoctor.model.kernel import NF
from ctdoctor.model.persisted import SysctlSetting

from .build import MAX, Persisted, context, fired, ns, quiet, snapshot

CODE = "CT020"
OLD = SysctlSetting(NF + "nf_conntrack_max", "1048576", "/etc/sysctl.conf", 4,
                    raw_key="net.ipv4.netfilter.ip_conntrack_max")


def test_fires_warning_when_the_intended_max_never_applied_to_a_busy_table():
    f = fired(CODE, context(snapshot(ns(count=MAX // 2 + 1), persisted=Persisted(no_effect=[OLD]))), WARNING,
              netns=None)
    assert f.evidence["settings"][0]["key"] == "net.ipv4.netfilter.ip_conntrack_max"
    assert f.evidence["settings"][0]["live"] == str(MAX)
    assert f.fix[0] == "sed -i '4s/^/# no such key on this kernel: /' /etc/sysctl.conf"


def test_a_quiet_table_is_information():
    fired(CODE, context(snapshot(ns(count=10), persisted=Persisted(no_effect=[OLD]))), INFO, netns=None)


def test_quiet_without_such_keys():
    quiet(CODE, context(snapshot(ns())))


def test_missing_persisted_config_says_nothing():
    quiet(CODE, context(snapshot(ns(), persisted=Persisted())))
