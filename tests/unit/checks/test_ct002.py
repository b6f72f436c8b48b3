"""CT002 packets dropped, on plain facts."""

from ctdoctor.diagnose.checks.base import CRITICAL, INFO, WARNING
from ctdoctor.model.kernel import EXPECT_FULL

from .build import context, fired, log, ns, quiet, run, snapshot, stats, unknown, value

CODE = "CT002"
STILL = "ctdoctor status --netns all --interval 5   # are they still rising?"


def test_fires_critical_while_drop_rises():
    st = ns(stats=stats(drop=100, insert_failed=0), later=stats(drop=150, insert_failed=0), interval=1.0)
    f = fired(CODE, context(snapshot(st)), CRITICAL)
    assert value(f.evidence["drop"]) == 100 and f.evidence["drop_per_second"] == 50
    assert f.fix[0] == STILL


def test_fires_on_a_fresh_table_full_line_and_points_at_top_when_full():
    st = ns(count=262000, stats=stats(drop=0))
    f = fired(CODE, context(snapshot(st, kernel_log=[log(age=30)])), CRITICAL)
    assert f.evidence["kernel_log_lines"] == 1
    assert f.fix[0] == "ctdoctor top --netns init --by src,state"


def test_old_drops_since_boot_are_a_warning_and_stale_lines_history():
    fired(CODE, context(snapshot(ns(stats=stats(drop=7)))), WARNING)
    st = ns(stats=stats(drop=0))
    fired(CODE, context(snapshot(st, kernel_log=[log(age=90 * 86400)])), INFO)


def test_quiet_without_drops():
    quiet(CODE, context(snapshot(ns(stats=stats(drop=0, insert_failed=0)),
                                 kernel_log=[log(EXPECT_FULL, line="nf_conntrack: expectation table full")])))


def test_missing_stats_and_log_is_not_enough_data():
    u = unknown(CODE, context(snapshot(ns(), kernel_log_sources=[])), netns=None)
    assert "no conntrack stats" in u.reason
    got = run(CODE, context(snapshot(ns(stats=stats(drop=0)), kernel_log_sources=[])))
    assert len(got) == 1 and "no kernel log was readable" in got[0].reason
