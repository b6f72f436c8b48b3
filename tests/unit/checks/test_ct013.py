"""CT013 heavy hitter, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, summary, unknown

CODE = "CT013"
HEAVY = {"src": [("10.0.0.9", 600), ("10.0.0.1", 50)], "dst": [("10.1.0.1", 100)], "dport": [("443", 200)]}


def test_fires_on_one_source_holding_most_of_the_table():
    s = summary({"ESTABLISHED": 2000}, top=HEAVY)
    f = fired(CODE, context(snapshot(ns(count=2000)), summaries={"init": s}), INFO)
    assert (f.evidence["key"], f.evidence["value"], f.evidence["entries"]) == ("src", "10.0.0.9", 600)
    assert f.fix[0] == "ctdoctor top --netns init --src 10.0.0.9 --by src,dst,dport"
    fired(CODE, context(snapshot(ns(count=int(MAX * 0.9))), summaries={"init": s}), WARNING)


def test_quiet_when_spread():
    spread = {"src": [("10.0.0.9", 100)], "dst": [("10.1.0.1", 100)], "dport": [("443", 100)]}
    quiet(CODE, context(snapshot(ns(count=2000)), summaries={"init": summary({"ESTABLISHED": 2000}, top=spread)}))


def test_missing_listing_is_not_enough_data():
    unknown(CODE, context(snapshot(ns(count=2000)), summaries={"init": None}))
