"""CT010 memory of the max, on plain facts."""

from ctdoctor.diagnose.checks.base import INFO, WARNING

from .build import MAX, context, fired, ns, quiet, snapshot, unknown, value

CODE = "CT010"


def test_fires_when_a_full_table_takes_half_the_ram():
    snap = snapshot(ns(buckets=MAX), mem_total=128 << 20, entry_size=320, entry_size_source="/proc/slabinfo")
    f = fired(CODE, context(snap), WARNING, netns=None)
    assert f.evidence["bytes_when_full"] == MAX * 320 + MAX * 8 and value(f.evidence["entry_size"]) == 320
    assert f.fix[0] == "ctdoctor plan --memory-budget 10%"


def test_a_quarter_is_information():
    fired(CODE, context(snapshot(ns(buckets=MAX), mem_total=256 << 20, entry_size=320)), INFO, netns=None)


def test_quiet_with_plenty_of_ram():
    quiet(CODE, context(snapshot(ns())))


def test_missing_memtotal_is_not_enough_data():
    assert "MemTotal" in unknown(CODE, context(snapshot(ns(), mem_total=None)), netns=None).reason
