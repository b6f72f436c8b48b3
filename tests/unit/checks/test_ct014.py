"""CT014 sockets against conntrack, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO

from .build import MAX, RulesSummary, context, fired, ns, quiet, snapshot, summary, value

CODE = "CT014"


def test_fires_with_a_full_table_and_established_sockets():
    f = fired(CODE, context(snapshot(ns(count=MAX)), sockets={"init": 40}), INFO)
    assert value(f.evidence["established_sockets"]) == 40
    assert f.fix[0] == "ctdoctor doctor --only CT001,CT002 --netns init"


def test_fires_when_most_connections_are_untracked():
    st = ns(rules=RulesSummary(sources=["nft"], notrack=["raw prerouting: udp dport 53 notrack"]))
    ctx = context(snapshot(st), sockets={"init": 200}, socket_sources={"init": "ss -s"},
                  summaries={"init": summary({"ESTABLISHED": 10})})
    f = fired(CODE, ctx, INFO)
    assert f.evidence["established_sockets"] == {"value": 200, "source": "ss -s"}
    assert f.fix[0] == "ctdoctor doctor --only CT016"


def test_quiet_without_a_story_to_tell():
    quiet(CODE, context(snapshot(ns())))  # neither full nor NOTRACK: ss is not even asked for


def test_missing_socket_count_says_nothing():
    quiet(CODE, context(snapshot(ns(count=MAX)), sockets={"init": None}))
