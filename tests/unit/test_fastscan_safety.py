"""The C extension's safety: no leaked references or memory on any entry point, over valid and
invalid input; a random hash seed per process that never shows in the output; a second thread
on one Aggregator gets a RuntimeError instead of corrupting it.

Each leak test calls an entry point many times after a warm-up and holds three figures flat: the
interpreter's allocated blocks (a leaked Python object), the reference counts of the inputs and
results (a missing or extra Py_DECREF), and the resident set (a leaked malloc or mapping, which
Python's counters do not see).
"""

from __future__ import annotations

import gc
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ctdoctor.listing.accel import accelerated
from ctdoctor.listing.entry import Entry, Tuple
from ctdoctor.listing.query import Query
from tests.conftest import DATA

pytestmark = pytest.mark.skipif(not accelerated(), reason="C accelerator not built")

ROOT = Path(__file__).parent.parent.parent
CALLS = 2000
BLOCK_SLACK = 64  # free lists and caches settle within this many blocks
RSS_SLACK = 4 << 20  # a leak of one 32 KiB key buffer per call would be 62 MiB over 2000 calls

TEXT = (DATA / "proc_nf_conntrack_6.18").read_bytes() + (DATA / "conntrack_L_extended_6.18").read_bytes()
JUNKY = TEXT + b"garbage line\n\x00binary\n" + b"src=" + b"9" * 5000 + b"\n" + b"[" * 3000 + b"\n"
LINE = TEXT.split(b"\n")[0]
ERROR = struct.pack("=IHHIIi", 20, 2, 0, 1, 0, -1)  # NLMSG_ERROR, EPERM


def fs():
    from ctdoctor.listing import _fastscan

    return _fastscan


def netlink_dump() -> bytes:
    from tests.unit.test_fastpaths import DONE, encode  # here: the encoder of ctnetlink's attributes

    return b"".join(encode(e) for e in (
        Entry("ipv4", "udp", 17, 30, None, Tuple("10.0.0.1", "10.0.0.2", 5, 53), Tuple("10.0.0.2", "10.0.0.1", 53, 5),
              unreplied=True, mark=3, use=1, zone=4),
        Entry("ipv4", "tcp", 6, 30, "ESTABLISHED", Tuple("10.0.0.1", "10.0.0.3", 6, 443, packets=2, bytes=80),
              Tuple("10.0.0.3", "10.0.0.1", 443, 6, packets=1, bytes=40), assured=True, mark=0, use=1),
        Entry("ipv6", "tcp", 6, 30, "SYN_SENT", Tuple("::1", "::2", 5, 80, packets=1, bytes=60),
              Tuple("::2", "::1", 80, 5, packets=0, bytes=0), unreplied=True, mark=0, use=1))) + DONE


NL = netlink_dump()


def agg(fields=(0, 4), states=None, protos=None, port=-1, src=None, dst=None):
    return fs().Aggregator(fields, states, protos, port, src, dst)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def holds_flat(call: Callable[[], object], *watched: object, n: int = CALLS) -> None:
    """call() n times: allocated blocks, the watched objects' reference counts and RSS stay flat."""
    for _ in range(50):  # warm-up: tables grown, free lists and caches filled
        call()
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]
    blocks, mem = sys.getallocatedblocks(), rss()
    for _ in range(n):
        call()
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == refs
    assert sys.getallocatedblocks() - blocks < BLOCK_SLACK
    assert rss() - mem < RSS_SLACK


def raises(exc: type[BaseException], fn: Callable[..., object], *args: object) -> Callable[[], None]:
    def call() -> None:
        with pytest.raises(exc):
            fn(*args)
    return call


# ---- each entry point, valid and invalid input ---------------------------------------------------


def test_init_and_dealloc_leak_nothing():
    src = ((4, bytes(4), 8),)
    states, protos = (b"ESTABLISHED",), (b"tcp",)

    def make_feed_drop():  # a table made, grown (its mappings) and freed
        a = agg((0, 1, 3), states, protos, 443, src, None)
        a.feed(TEXT)
        a.sample_every(2)

    holds_flat(make_feed_drop, states, protos, src)
    a = agg()
    a.feed(TEXT)
    holds_flat(lambda: a.__init__((0,), states, None, -1, None, src), states, src)  # a second __init__: a new table
    assert a.total == 0 and a.result() == {}
    holds_flat(raises(ValueError, agg, (99,)), states)
    holds_flat(raises(ValueError, agg, tuple(range(12))))
    holds_flat(raises(TypeError, agg, ("x",)))
    holds_flat(raises(TypeError, agg, (0,), [b"ESTABLISHED"]))  # a list: once read as a tuple, out of bounds
    holds_flat(raises(TypeError, agg, (0,), ("ESTABLISHED",)))
    holds_flat(raises(TypeError, agg, (0,), None, (1,)))
    holds_flat(raises(ValueError, agg, (0,), None, None, -1, ((4, bytes(4), 33),)))
    holds_flat(raises(TypeError, agg, (0,), None, None, -1, ((4, "x", 8),)))
    holds_flat(raises(ValueError, agg, (0,), None, None, -1, None, "x"))


def test_feed_leaks_nothing():
    a = agg()
    view, arr = memoryview(TEXT), bytearray(JUNKY)
    holds_flat(lambda: a.feed(TEXT), TEXT)
    holds_flat(lambda: a.feed(view[:300], True), view, TEXT)
    holds_flat(lambda: a.feed(arr), arr)
    holds_flat(lambda: a.feed(JUNKY, True), JUNKY)
    holds_flat(lambda: a.feed(b""))
    holds_flat(raises(TypeError, a.feed, "text"))
    holds_flat(raises(TypeError, a.feed))
    r = a.feed(TEXT)
    assert sys.getrefcount(r) == 2 and all(sys.getrefcount(x) >= 2 for x in r)


def test_feed_many_leaks_nothing():
    a, b = agg(), agg((5,), (b"ESTABLISHED",))
    aggs = (a, b, a)  # one twice: claimed once, fed twice, as before
    holds_flat(lambda: fs().feed_many(aggs, JUNKY, True), aggs, JUNKY, a, b)
    holds_flat(raises(ValueError, fs().feed_many, (), TEXT), TEXT)
    holds_flat(raises(ValueError, fs().feed_many, [a], TEXT), a)
    holds_flat(raises(TypeError, fs().feed_many, (a, 1), TEXT), a, TEXT)
    holds_flat(raises(TypeError, fs().feed_many, (a,), 1), a)


def test_netlink_feeding_leaks_nothing():
    a, b = agg(), agg((0, 1, 2, 3, 6, 7, 8, 9, 10))
    holds_flat(lambda: a.feed_netlink(NL), NL, a)
    holds_flat(lambda: fs().netlink_feed((a, b), NL), NL, a, b)
    holds_flat(lambda: a.feed_netlink(NL[:-7]), NL)  # cut short
    holds_flat(lambda: a.feed_netlink(NL[:40] + b"\xff" * 60), NL)  # malformed
    holds_flat(raises(OSError, a.feed_netlink, ERROR))
    holds_flat(raises(OSError, fs().netlink_feed, (a, b), ERROR), a, b)
    holds_flat(raises(TypeError, fs().netlink_feed, (a, b"x"), NL), a, NL)
    holds_flat(raises(TypeError, a.feed_netlink, None))


def test_netlink_select_and_done_leak_nothing():
    a = agg((0,), (b"ESTABLISHED", b"UNREPLIED"))
    holds_flat(lambda: fs().netlink_select(a, NL, True, 1, 2), NL, a)
    holds_flat(lambda: fs().netlink_select(a, NL, False, 7), NL, a)
    holds_flat(raises(OSError, fs().netlink_select, a, ERROR, False, 1), a)
    holds_flat(raises(TypeError, fs().netlink_select, "a", NL, False, 1), NL)
    holds_flat(lambda: fs().netlink_done(NL), NL)
    holds_flat(lambda: fs().netlink_done(NL[:50]), NL)
    holds_flat(raises(OSError, fs().netlink_done, ERROR))
    r = fs().netlink_select(a, NL, False, 1)
    assert sys.getrefcount(r) == 2 and sys.getrefcount(r[5]) == 3 and r[5]  # requests: only in the tuple


def test_result_top_merge_and_sampling_leak_nothing():
    a, b = agg((0, 1)), agg((0, 1))
    a.feed(TEXT)
    a.feed_netlink(NL)
    b.feed(JUNKY)
    holds_flat(a.result, a)
    holds_flat(lambda: a.top(0), a)
    holds_flat(lambda: a.top(2), a)
    holds_flat(lambda: a.top(-1), a)
    holds_flat(raises(TypeError, a.top, "x"), a)
    holds_flat(lambda: a.merge(b), a, b)
    holds_flat(lambda: b.merge(a, b"netns\x1f"), a, b)
    holds_flat(raises(TypeError, a.merge, 1), a)
    holds_flat(raises(ValueError, a.merge, b, b"p" * 70000), a, b)  # a key too long
    holds_flat(lambda: a.sample_every(3), a)
    holds_flat(raises(ValueError, a.sample_every, 0), a)
    _groups, rows = a.top(0)
    assert rows and sys.getrefcount(rows) == 3
    for row in rows:  # each row, and the label dict in it, held by its container only
        assert sys.getrefcount(row) == 3 and sys.getrefcount(row[6]) == 3
    d = a.result()
    assert sys.getrefcount(d) == 2
    for k in d:  # (not .items(): its iterator keeps the last pair)
        v = d[k]
        assert sys.getrefcount(k) == 3 and sys.getrefcount(v) == 3


def test_scan_fields_leaks_nothing():
    for how in (0, 1, 2):
        holds_flat(lambda how=how: fs().scan_fields(LINE, how), LINE)
        holds_flat(lambda how=how: fs().scan_fields(b"garbage", how))
        holds_flat(lambda how=how: fs().scan_fields(b"", how))
    holds_flat(raises(TypeError, fs().scan_fields, "line", 0))
    r = fs().scan_fields(LINE, 2)
    assert r is not None and sys.getrefcount(r) == 2


def test_read_full_and_drain_socket_leak_nothing(tmp_path):
    p = tmp_path / "listing"
    p.write_bytes(TEXT)
    buf = bytearray(len(TEXT) + 10)
    fd = os.open(p, os.O_RDONLY)
    try:
        def read() -> None:
            os.lseek(fd, 0, os.SEEK_SET)
            assert fs().read_full(fd, buf) == len(TEXT)

        holds_flat(read, buf)
        holds_flat(raises(OSError, fs().read_full, -1, buf), buf)
        holds_flat(raises(TypeError, fs().read_full, fd, TEXT), TEXT)  # not writable
    finally:
        os.close(fd)
    s, r = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with s, r:
        def drain() -> None:
            s.send(b"x" * 101)
            data, lost = fs().drain_socket(r.fileno(), 65536)
            assert len(data) == 104 and lost is False

        holds_flat(drain)
        holds_flat(lambda: fs().drain_socket(r.fileno(), 0))  # nothing waiting
        holds_flat(raises(OSError, fs().drain_socket, -1, 65536))


def test_private_entry_points_leak_nothing():
    a = agg()

    def claim_release() -> None:
        fs()._set_busy(a, True)
        fs()._set_busy(a, False)

    holds_flat(claim_release, a)
    holds_flat(fs()._hash_seed)
    holds_flat(raises(TypeError, fs()._set_busy, 1, True))


# ---- the hash seed -------------------------------------------------------------------------------

SEED_SCRIPT = """
import hashlib, sys
from ctdoctor.listing import _fastscan as m
data = open(sys.argv[1], "rb").read()
h = hashlib.sha256()
for fields in [(0,), (0, 1, 2, 3), (4, 5), (8, 9, 10)]:
    a = m.Aggregator(fields, None, None, -1, None, None)
    a.feed(data)
    b = m.Aggregator(fields, None, None, -1, None, None)
    b.merge(a, b"ns\\x1f")
    h.update(repr((a.result(), a.top(0), a.top(7), b.result(), b.top(5))).encode())
print(m._hash_seed(), h.hexdigest())
"""


def test_two_processes_get_different_seeds_and_the_same_output(tmp_path):
    from tests.unit.test_fastpaths import listing

    p = tmp_path / "listing"
    p.write_bytes(listing(20000, "proc", 5) + TEXT)  # many keys, many ties in count
    runs = [subprocess.run([sys.executable, "-c", SEED_SCRIPT, str(p)], capture_output=True, text=True, check=True,
                           cwd=ROOT, timeout=120).stdout.split() for _ in range(3)]
    seeds, digests = {int(r[0]) for r in runs}, {r[1] for r in runs}
    assert len(seeds) == 3 and len(digests) == 1
    assert fs()._hash_seed() not in seeds
    # the same as the pure-Python aggregator gives (it has no seed at all)
    for fields in [("src",), ("state", "proto")]:
        q = Query(list(fields))
        c, py = q.aggregator(), q.aggregator(force_python=True)
        c.feed(p.read_bytes())
        py.feed(p.read_bytes())
        assert c.top(0) == py.top(0) and c.result() == py.result()


# ---- the busy guard ------------------------------------------------------------------------------


def test_a_claimed_aggregator_refuses_every_call_that_touches_its_table():
    a, b = agg(), agg()
    a.feed(TEXT)
    before = (a.result(), a.total, a.matched)
    fs()._set_busy(a, True)
    try:
        calls: list[Callable[[], object]] = [
            lambda: a.feed(TEXT), lambda: a.feed_netlink(NL), lambda: fs().feed_many((b, a), TEXT),
            lambda: fs().netlink_feed((b, a), NL), lambda: fs().netlink_select(a, NL, False, 1),
            lambda: a.merge(b), lambda: b.merge(a), a.result, lambda: a.top(3),
            lambda: a.sample_every(2), lambda: a.__init__((0,), None, None, -1, None, None),
            lambda: fs()._set_busy(a, True)]
        for call in calls:
            with pytest.raises(RuntimeError, match="in use by another thread"):
                call()
        assert a.total == before[1] and a.matched == before[2]  # the counters stay readable
        assert b.total == 0  # feed_many and netlink_feed claim all or none: b was not fed either
    finally:
        fs()._set_busy(a, False)
    assert (a.result(), a.total, a.matched) == before
    a.feed(TEXT)
    assert a.total == 2 * before[1]


def test_two_threads_feeding_one_aggregator_one_gets_runtime_error():
    """Both start together (a barrier, no sleeps); the feed releases the GIL, so the second finds the
    table claimed. Tried a few times in case one feed ends before the other starts."""
    big = TEXT * 20000
    lines = big.count(b"\n")
    for _attempt in range(5):
        a = agg((0, 1, 3))
        start = threading.Barrier(2)
        done: list[tuple[int, int, int]] = []
        refused: list[RuntimeError] = []

        def feed(a=a, start=start, done=done, refused=refused) -> None:
            start.wait()
            try:
                done.append(a.feed(big))
            except RuntimeError as e:
                refused.append(e)

        threads = [threading.Thread(target=feed) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(done) + len(refused) == 2
        assert a.total == lines * len(done)  # whatever the timing: counted once per finished feed
        assert all(d == (lines, 0, 0) for d in done)
        if len(refused) == 1:
            assert "in use by another thread" in str(refused[0])
            ref = agg((0, 1, 3))
            ref.feed(big)
            assert a.result() == ref.result() and a.top(5) == ref.top(5)  # the one finished feed, intact
            return
    pytest.fail("the two feeds never overlapped in 5 tries")


# ---- allocation failures -------------------------------------------------------------------------


def test_every_python_allocation_failing_in_turn_gives_memory_error_never_a_crash():
    """CPython's test hooks fail the i-th allocation of a call, for every i: the call either raises
    MemoryError (releasing what it made and its claim on the table) or gives the full result."""
    testcapi = pytest.importorskip("_testcapi")
    a, b = agg((0, 1)), agg((0, 1))
    a.feed(TEXT)
    a.feed_netlink(NL)
    expected = {"top": a.top(0), "top2": a.top(2), "result": a.result(), "scan": fs().scan_fields(LINE, 2)}
    calls: dict[str, Callable[[], object]] = {
        "top": lambda: a.top(0), "top2": lambda: a.top(2), "result": a.result,
        "scan": lambda: fs().scan_fields(LINE, 2), "feed": lambda: b.feed(TEXT), "merge": lambda: b.merge(a, b"x"),
        "select": lambda: fs().netlink_select(b, NL, False, 1),
        "init": lambda: agg((0,), (b"A",), None, -1, ((4, bytes(4), 8),))}
    failed = dict.fromkeys(calls, 0)
    gc.collect()
    blocks = sys.getallocatedblocks()
    for name, call in calls.items():
        for i in range(200):
            testcapi.set_nomemory(i, i + 1)
            try:
                r = call()
            except MemoryError:
                failed[name] += 1
                continue
            finally:
                testcapi.remove_mem_hooks()
            if name in expected:
                assert r == expected[name], name
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 4 * BLOCK_SLACK  # (b grew by the merges: a few blocks)
    assert all(failed[n] for n in ("top", "top2", "result", "scan"))  # their objects' failures were reached
    assert a.top(0) == expected["top"] and a.result() == expected["result"]  # no claim left behind
