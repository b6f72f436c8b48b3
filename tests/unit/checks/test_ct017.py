"""CT017 liberal or loose TCP tracking, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO

from .build import context, fired, ns, quiet, snapshot, value

CODE = "CT017"


def test_fires_on_be_liberal():
    f = fired(CODE, context(snapshot(ns(settings={"nf_conntrack_tcp_be_liberal": 1}))), INFO, netns=None)
    assert value(f.evidence["nf_conntrack_tcp_be_liberal"]) == 1
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=0   # if it is not deliberate"


def test_quiet_on_defaults():
    quiet(CODE, context(snapshot(ns(settings={"nf_conntrack_tcp_be_liberal": 0, "nf_conntrack_tcp_loose": 1,
                                              "nf_conntrack_checksum": 1}))))


def test_missing_settings_say_nothing():
    quiet(CODE, context(snapshot(ns())))
