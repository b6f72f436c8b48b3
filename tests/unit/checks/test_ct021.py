"""CT021 tunnel traffic tracked, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, summary

CODE = "CT021"
OVS = "sos_commands/openvswitch/ovs-appctl_dpctl.dump-conntrack_-m"


def test_fires_on_vxlan_entries_in_the_listing():
    s = summary({"ESTABLISHED": 1000}, tunnels={"vxlan": 500})
    f = fired(CODE, context(snapshot(ns()), summaries={"init": s}), INFO)
    assert f.evidence["tunnels"] == {"value": {"vxlan": 500}, "source": "/proc/net/nf_conntrack"}
    assert f.fix[0] == "ctdoctor notrack --port 4789 --proto udp"
    fired(CODE, context(snapshot(ns(count=int(MAX * 0.9))), summaries={"init": s}), WARNING)


def test_fires_on_open_vswitchs_dump_when_the_listing_has_none():
    f = fired(CODE, context(snapshot(ns()), summaries={"init": None}, ovs=({"geneve": 10}, OVS)), INFO)
    assert f.evidence["tunnels"] == {"value": {"geneve": 10}, "source": OVS}


def test_quiet_without_tunnels():
    quiet(CODE, context(snapshot(ns()), summaries={"init": summary()}))


def test_missing_listing_says_nothing():
    quiet(CODE, context(snapshot(ns()), summaries={"init": None}))
