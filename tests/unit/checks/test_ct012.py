"""CT012 state pile-ups, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, summary, unknown, value

CODE = "CT012"


def test_fires_on_a_syn_sent_pile_up():
    s = summary({"ESTABLISHED": 700, "SYN_SENT": 300})
    f = fired(CODE, context(snapshot(ns()), summaries={"init": s}), INFO)
    assert f.title == "SYN_SENT pile-up" and f.evidence["entries"] == 300 and value(f.evidence["listed"]) == 1000
    assert f.fix[0] == "ctdoctor top --netns init --state SYN_SENT --by dst,dport"
    fired(CODE, context(snapshot(ns(count=int(MAX * 0.9))), summaries={"init": s}), WARNING)


def test_quiet_on_a_healthy_mix():
    quiet(CODE, context(snapshot(ns()), summaries={"init": summary({"ESTABLISHED": 900, "TIME_WAIT": 100})}))


def test_missing_listing_is_not_enough_data():
    ctx = context(snapshot(ns()), summaries={"init": None}, summary_errors={"init": "Failure: netns gone"})
    assert unknown(CODE, ctx).reason == "not enough data: Failure: netns gone"
