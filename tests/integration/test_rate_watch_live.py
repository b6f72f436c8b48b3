"""`top --rate --watch`'s service (monitor.rate.Watcher) on the real kernel: a rolling window over slices."""

from __future__ import annotations

import pytest

from ctdoctor.listing.query import parse_query
from ctdoctor.monitor import rate
from tests.conftest import Netns, needs_kernel
from tests.integration.test_rate_record_live import paced, seen

pytestmark = [needs_kernel, pytest.mark.kernel]


def test_the_watcher_rolls_its_window_and_closes_its_sockets():
    with Netns("ratew") as ns:
        p = paced(ns, "127.0.0.5", 100, 5)
        try:
            seen(ns, "127.0.0.5")
            q = parse_query("src", None, None, None, None, None)
            with rate.Watcher(ns.name, q, span=1.0, slice_seconds=0.5, limit=5) as w:
                docs = [w.frame() for _ in range(4)]
                socks = [c.new_sock for c in w.counters]
            assert all(s.fileno() == -1 for s in socks)  # closed when the watch ends
        finally:
            p.wait(20)
    assert [d["windows"] for d in docs] == [1, 2, 3, 4]
    # the first frame is one slice; then the window holds two slices of 0.5 s (the span), never more
    assert 0.45 <= docs[0]["seconds"] < 0.95 and all(0.95 <= d["seconds"] < 1.5 for d in docs[1:]), docs
    last = docs[-1]
    assert last["rows"][0]["key"]["src"] == "127.0.0.5"
    assert abs(last["rows"][0]["rate"] - 100) <= 0.4 * 100, last["rows"][0]
