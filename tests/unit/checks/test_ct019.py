"""CT019 expectation table full, on plain facts."""

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING
from ctdoctor.model.kernel import EXPECT_FULL

from .build import context, fired, log, ns, quiet, snapshot, value

CODE = "CT019"
EXPECT = "/proc/net/nf_conntrack_expect"


def test_fires_near_the_expectation_max():
    snap = snapshot(ns(settings={"nf_conntrack_expect_max": 1024}))
    f = fired(CODE, context(snap, expectations=(1000, EXPECT)), CRITICAL, netns=None)
    assert f.evidence["expectations"] == {"value": 1000, "source": EXPECT} and value(f.evidence["expect_max"]) == 1024
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_expect_max=2048"


def test_fires_on_the_log_line_fresh_or_old():
    line = "nf_conntrack: expectation table full"
    fired(CODE, context(snapshot(ns(), kernel_log=[log(EXPECT_FULL, line=line)])), WARNING, netns=None)
    fired(CODE, context(snapshot(ns(), kernel_log=[log(EXPECT_FULL, age=90 * 86400, line=line)])), INFO,
          netns=None)


def test_quiet_with_room():
    quiet(CODE, context(snapshot(ns(settings={"nf_conntrack_expect_max": 1024})), expectations=(3, EXPECT)))


def test_missing_expectation_table_says_nothing():
    quiet(CODE, context(snapshot(ns(settings={"nf_conntrack_expect_max": 1024}))))
