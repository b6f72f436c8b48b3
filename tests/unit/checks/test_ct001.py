"""CT001 table full, on plain facts."""

import pytest

from ctdoctor.diagnose.checks.base import CRITICAL, WARNING
from ctdoctor.model.snapshot import NotGathered

from .build import MAX, context, fired, ns, quiet, snapshot, summary, unknown, value

CODE = "CT001"


@pytest.mark.parametrize("count,severity", [(250000, CRITICAL), (int(MAX * 0.85), WARNING)])
def test_fires_with_the_plans_max_in_the_fix(count, severity):
    f = fired(CODE, context(snapshot(ns(count=count)), plan_max=1048576), severity)
    assert value(f.evidence["count"]) == count and value(f.evidence["max"]) == MAX
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_max=1048576"


def test_the_count_from_a_whole_listing_when_none_was_captured():
    st = ns(count=None)
    f = fired(CODE, context(snapshot(st), summaries={"init": summary({"ESTABLISHED": 260000})}, plan_max=0),
              CRITICAL)
    assert value(f.evidence["count"]) == 260000 and "entries listed" in f.evidence["count"]["source"]
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_max=524288"  # recommended: twice the max


def test_quiet_below_the_warning_fill():
    quiet(CODE, context(snapshot(ns(count=1000))))


def test_missing_count_and_listing_is_not_enough_data():
    u = unknown(CODE, context(snapshot(ns(count=None)), summaries={"init": None}))
    assert "nf_conntrack_count" in u.reason


def test_a_fact_that_was_not_gathered_raises():
    with pytest.raises(NotGathered):
        fired(CODE, context(snapshot(ns(count=250000))), CRITICAL)  # the plan's max was not gathered
