"""The exporter's frugal refresh on the real kernel: a big table's sources counted on a sample give
the same heavy hitter as the doctor's exact count, and the states stay exact."""

from __future__ import annotations

import pytest

from tests.conftest import Netns, needs_kernel

pytestmark = [needs_kernel, pytest.mark.kernel]


def summaries(name: str):
    from ctdoctor.diagnose.facts import HostFacts
    from ctdoctor.sources import snapshot
    from ctdoctor.sources.hostroot import HostRoot

    root = HostRoot.live()
    snap = snapshot.build(root, name, interval=None)
    st = next(s for s in snap.namespaces if s.name == name)
    return [HostFacts(snap, root, live=True, prefer_netlink=True, frugal=f).summary(st) for f in (False, True)]


def test_a_big_tables_heavy_hitter_is_found_on_the_sample_and_states_stay_exact():
    from ctdoctor.diagnose.facts import SAMPLE_ABOVE
    from ctdoctor.lab.scenarios import _tcp_lines
    from ctdoctor.monitor.refresh import Worker

    with Netns("smp") as ns:
        # 60 % of the entries from one source, 40 % from another, each to distinct destinations
        ns.load(_tcp_lines(48_000, src="127.0.0.9") + _tcp_lines(32_000, src="127.0.0.1", first=48_000))
        n = ns.count()
        assert n > SAMPLE_ABOVE, n  # big enough to be sampled
        exact, frugal = summaries(ns.name)
        assert exact is not None and frugal is not None
        assert exact.top_every == 1 and frugal.top_every > 1
        assert frugal.listed == exact.listed == n and frugal.states == exact.states  # counted exactly
        assert frugal.proto_states == exact.proto_states
        (v1, n1), (v2, n2) = exact.top["src"][:2]
        assert (v1, v2) == ("127.0.0.9", "127.0.0.1")
        (s1, m1), (s2, m2) = frugal.top["src"][:2]
        assert (s1, s2) == (v1, v2)
        assert abs(m1 - n1) <= 0.02 * n and abs(m2 - n2) <= 0.02 * n  # the estimate, scaled back up
        w = Worker(ns.name, 120)
        try:
            r = w.refresh()
        finally:
            w.stop()
        assert r.ok, r.error
        assert ("CT013", "info", ns.name) in r.findings  # the heavy hitter, found on the sample
        assert {(p, s): c for p, s, c in r.by_state[ns.name]} == exact.proto_states


RETRY = r"""
import json, os, sys
from ctdoctor.sources.live import NetnsReader

name = sys.argv[1]


def starve():
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        return fds


held = NetnsReader([name])  # its netns files are open: a starved discovery must keep them
held.rediscover()
fresh = NetnsReader([name])  # finds the netns while starved
fds = starve()
held.rediscover()
kept = [(s.readable, s.count) for s in held.sample()[0]]
os.close(fds.pop())  # one fd to spare: the namespaces are found, their files cannot be opened
fresh.rediscover()
starved = [s.error for s in fresh.sample()[0]]
for fd in fds:
    os.close(fd)
fresh.rediscover()
print(json.dumps({"kept": kept, "held_starved": held.starved, "starved": starved,
                  "after": [(s.readable, s.count) for s in fresh.sample()[0]]}))
"""


def test_a_netns_that_could_not_be_opened_for_want_of_fds_is_opened_at_the_next_discovery():
    import json
    import subprocess
    import sys

    with Netns("fd") as ns:
        ns.load_established(5)
        p = subprocess.run([sys.executable, "-c", RETRY, ns.name], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout)
        assert got["kept"] == [[True, 5]]  # no fd for discovery: what was open is still served
        assert got["held_starved"] == "Too many open files"
        assert got["starved"] and "Too many open files" in got["starved"][0]
        assert "root" not in got["starved"][0]  # the reason, not a wrong hint
        assert got["after"] == [[True, 5]]  # opened at the next discovery
