"""CT004 count far above the listing, on plain facts."""

from ctdoctor.diagnose.checks.base import WARNING

from .build import context, fired, ns, quiet, snapshot, summary, unknown, value

CODE = "CT004"


def test_fires_on_a_gap():
    f = fired(CODE, context(snapshot(ns(count=10000)), summaries={"init": summary({"ESTABLISHED": 5000})}), WARNING)
    assert f.evidence["gap"] == 5000 and value(f.evidence["listed"]) == 5000
    assert f.fix[0].startswith("ss -f netlink -p")


def test_live_it_names_the_event_listener_that_stopped_reading():
    s = summary({"ESTABLISHED": 5000}, count_after=9000, read_seconds=0.2)
    stuck = {"inode": 7, "portid": 99, "unread_bytes": 212992, "drops": 3, "pid": 812, "comm": "conntrackd"}
    f = fired(CODE, context(snapshot(ns(count=10000)), live=True, summaries={"init": s},
                            listeners={"init": [stuck]}), WARNING)
    assert f.evidence["gap"] == 4000 and f.evidence["event_listeners"] == [stuck]
    assert "conntrackd" in f.summary


def test_quiet_when_the_listing_holds_the_count():
    quiet(CODE, context(snapshot(ns(count=10000)), summaries={"init": summary({"ESTABLISHED": 9990})}))


def test_missing_listing_is_not_enough_data_with_the_reason():
    ctx = context(snapshot(ns(count=10000)), summaries={"init": None},
                  summary_errors={"init": "PermissionError: [Errno 13] Permission denied"})
    assert "Permission denied" in unknown(CODE, ctx).reason


def test_a_cut_listing_is_not_enough_data():
    ctx = context(snapshot(ns(count=10000)), summaries={"init": summary({"ESTABLISHED": 500}, sample=True)})
    assert "sample" in unknown(CODE, ctx).reason
