"""flush's selection in-process: its arguments, the one entry filter, the sample of what it matched."""

from __future__ import annotations

import argparse

import pytest

from ctdoctor.commands.flush import _states
from ctdoctor.errors import UsageError
from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.aggregate import Filter, make_aggregator
from ctdoctor.listing.entry import Entry, Tuple, entry_fields
from ctdoctor.write.flush import matches, sample, selection_args, what


def args(state="TIME_WAIT", src=None, dst=None, include_established=False):
    return argparse.Namespace(state=state, src=src, dst=dst, include_established=include_established)


def entry(state, sport, dport, assured=False, unreplied=False, src="10.0.0.1", proto="tcp"):
    return Entry("ipv4", proto, 6 if proto == "tcp" else 17, 30, state, Tuple(src, "192.0.2.1", sport, dport),
                 Tuple("192.0.2.1", src, dport, sport), unreplied=unreplied, assured=assured, use=1)


def test_states_are_checked_before_anything_is_read():
    assert _states(args("time_wait, unreplied")) == {"TIME_WAIT", "UNREPLIED"}
    with pytest.raises(UsageError, match="at least one state"):
        _states(args(" , "))
    with pytest.raises(UsageError, match="refusing to delete ESTABLISHED"):
        _states(args("ESTABLISHED"))
    assert _states(args("ESTABLISHED", include_established=True)) == {"ESTABLISHED"}
    with pytest.raises(UsageError, match=r"--src 10.0.0.0/8,nope: not an address or CIDR"):
        _states(args(src="10.0.0.0/8,nope"))


def test_the_rules_keep_assured_established_and_filter_like_top():
    flt = Filter(*selection_args({"ALL"}, 80, "10.0.0.0/8", None)[1:])
    assert matches(entry("ESTABLISHED", 1, 80, assured=True), flt, False) == (False, True)
    assert matches(entry("ESTABLISHED", 1, 80, assured=True), flt, True) == (True, False)
    assert matches(entry("TIME_WAIT", 1, 80), flt, False) == (True, False)
    assert matches(entry("TIME_WAIT", 80, 1), flt, False) == (True, False)  # either port
    assert matches(entry("TIME_WAIT", 1, 443), flt, False) == (False, False)
    assert matches(entry("TIME_WAIT", 1, 80, src="172.16.0.1"), flt, False) == (False, False)
    unrep = Filter(*selection_args({"UNREPLIED"}, None, None, None)[1:])
    assert matches(entry("SYN_SENT", 1, 80, unreplied=True), unrep, False) == (True, False)
    assert matches(entry("SYN_SENT", 1, 80), unrep, False) == (False, False)


@pytest.mark.parametrize("force_python", [True, False])
def test_the_sample_names_the_biggest_groups_with_their_state_mix(force_python):
    if not force_python and not accelerated():
        pytest.skip("C accelerator not built")
    agg = make_aggregator(selection_args({"ALL"}, None, None, None), force_python=force_python)
    es = [entry("TIME_WAIT", i, 80) for i in range(3)] + [entry("CLOSE", 9, 80)] + \
         [entry(None, i, 53, unreplied=True, proto="udp") for i in range(2)]
    lines = [f"{e.proto} {e.protonum} 30 {e.state or ''} src={e.orig.src} dst={e.orig.dst} sport={e.orig.sport} "
             f"dport={e.orig.dport} {'[UNREPLIED] ' if e.unreplied else ''}src={e.reply.src} dst={e.reply.dst} "
             f"sport={e.reply.sport} dport={e.reply.dport} use=1\n" for e in es]
    agg.feed("".join(lines).encode())
    assert sample(agg) == [{"count": 4, "what": "tcp port 80 (TIME_WAIT 3, CLOSE 1)"},
                           {"count": 2, "what": "udp port 53 (UNREPLIED 2)"}]
    assert [entry_fields(e)[1] for e in es[-2:]] == [b"udp", b"udp"]


def test_what_a_group_says():
    assert what("icmp", None, {"REPLIED": 2}) == "icmp (REPLIED 2)"
    assert what("udp", 53, {"UNREPLIED": 29000, "ASSURED": 3}) == "udp port 53 (UNREPLIED 29,000, ASSURED 3)"
    assert what("tcp", 0, {}) == "tcp"
