"""CT018 a pod's netns near the global max, on plain facts."""

import pytest

from ctdoctor.diagnose.checks.base import CRITICAL, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, value

CODE = "CT018"


@pytest.mark.parametrize("count,severity", [(MAX - 10, CRITICAL), (int(MAX * 0.85), WARNING)])
def test_fires_for_the_full_pod_namespace(count, severity):
    snap = snapshot(ns(count=500), ns("cni-1", count=count, inode=4026532177, owner="ip netns"))
    f = fired(CODE, context(snap, plan_max=1048576), severity, netns="cni-1")
    assert value(f.evidence["count"]) == count and f.evidence["init_count"] == 500
    assert f.fix[0] == "ctdoctor top --netns cni-1 --by src,dport"
    assert f.fix[1].startswith("sysctl -w net.netfilter.nf_conntrack_max=1048576")


def test_quiet_when_pods_are_small_and_for_the_host_itself():
    quiet(CODE, context(snapshot(ns(count=MAX - 10), ns("cni-1", count=10))))


def test_missing_count_says_nothing():
    quiet(CODE, context(snapshot(ns(), ns("cni-1", count=None))))
