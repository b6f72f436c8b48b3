"""CT011 timeouts that crowd a busy table, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, summary, unknown, value

CODE = "CT011"
HALF = MAX // 2 + 1000
MIX = summary({"ESTABLISHED": 800, "TIME_WAIT": 200})


def test_fires_when_established_dominates_with_a_long_timeout():
    st = ns(count=HALF, settings={"nf_conntrack_tcp_timeout_established": 432000})
    f = fired(CODE, context(snapshot(st), summaries={"init": MIX}), INFO)
    assert f.evidence["state"] == "ESTABLISHED" and value(f.evidence["timeout"]) == 432000
    assert f.fix[0] == "sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=86400"
    st = ns(count=int(MAX * 0.9), settings={"nf_conntrack_tcp_timeout_established": 432000})
    fired(CODE, context(snapshot(st), summaries={"init": MIX}), WARNING)


def test_quiet_with_short_timeouts_or_a_quiet_table():
    st = ns(count=HALF, settings={"nf_conntrack_tcp_timeout_established": 86400})
    quiet(CODE, context(snapshot(st), summaries={"init": MIX}))
    quiet(CODE, context(snapshot(ns(count=1000))))  # below half full: the listing is not even asked for


def test_missing_listing_is_not_enough_data():
    ctx = context(snapshot(ns(count=HALF)), summaries={"init": None})
    assert unknown(CODE, ctx).reason == "not enough data: no entry listing (live /proc, ctnetlink, or a saved one)"
