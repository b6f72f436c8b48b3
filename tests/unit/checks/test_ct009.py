"""CT009 hash sizing, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, stats, value

CODE = "CT009"


def test_fires_on_a_high_ratio_warning_under_pressure():
    f = fired(CODE, context(snapshot(ns(buckets=16384))), INFO, netns=None)
    assert f.evidence["ratio"] == 16 and value(f.evidence["buckets"]) == 16384
    assert f.fix[0] == f"sysctl -w net.netfilter.nf_conntrack_buckets={MAX}"
    fired(CODE, context(snapshot(ns(count=int(MAX * 0.9), buckets=16384))), WARNING, netns=None)


def test_fires_on_refused_inserts():
    st = ns(buckets=MAX, stats=stats(chainlength=12))
    f = fired(CODE, context(snapshot(st)), INFO, netns=None)
    assert f.evidence == {"chaintoolong": 12} and f.fix[0] == f"sysctl -w net.netfilter.nf_conntrack_buckets={2 * MAX}"


def test_quiet_at_one_entry_per_bucket():
    quiet(CODE, context(snapshot(ns(buckets=MAX, stats=stats(chainlength=0)))))


def test_missing_buckets_says_nothing():
    quiet(CODE, context(snapshot(ns(buckets=None))))
