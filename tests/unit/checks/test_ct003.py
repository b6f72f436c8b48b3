"""CT003 early drop, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import context, fired, ns, quiet, snapshot, stats, value

CODE = "CT003"


def test_fires_when_recurring():
    f = fired(CODE, context(snapshot(ns(stats=stats(early_drop=5000)))), WARNING)
    assert value(f.evidence["early_drop"]) == 5000
    assert f.fix[0] == "ctdoctor top --netns init --state UNREPLIED --by src,dport"


def test_a_few_since_boot_in_a_quiet_table_are_history():
    fired(CODE, context(snapshot(ns(stats=stats(early_drop=3)))), INFO)


def test_quiet_without_early_drop():
    quiet(CODE, context(snapshot(ns(stats=stats(early_drop=0)))))


def test_missing_stats_says_nothing():
    quiet(CODE, context(snapshot(ns(stats=None))))
