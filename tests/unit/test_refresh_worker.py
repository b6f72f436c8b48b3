"""The exporter's refresh worker: one process across refreshes, replaced when it hangs, dies,
answers junk or grows; never an exception to the exporter. Real processes throughout."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from ctdoctor.monitor.refresh import Worker, parse_answer


def fake(body: str) -> list[str]:
    """A worker stand-in: python running ``body`` with ``line`` bound to each request."""
    code = "import sys, json, os, time\nfor line in sys.stdin:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return [sys.executable, "-c", code]


GOOD = """
print(json.dumps({"by_state": {"init": [["tcp", "ESTABLISHED", 3]]}, "listing_error": {},
                  "findings": [["CT001", "critical", "init"]], "cpu_seconds": 0.25, "rss_mb": 20.0,
                  "pid": os.getpid()}), flush=True)
"""


def test_one_process_answers_every_refresh_and_its_cpu_is_summed():
    w = Worker("all", 10, argv=fake(GOOD))
    try:
        got = [w.refresh() for _ in range(3)]
        assert all(r.ok for r in got)
        assert got[0].by_state == {"init": [("tcp", "ESTABLISHED", 3)]}
        assert got[0].findings == [("CT001", "critical", "init")]
        assert w.cpu_seconds == pytest.approx(0.75)
        assert w.proc is not None and w.served == 3  # the same process served all three
    finally:
        w.stop()
    assert w.proc is None


def test_a_hung_refresh_is_killed_and_the_next_one_starts_afresh():
    w = Worker("all", 0.5, argv=fake("time.sleep(60)"))
    try:
        r = w.refresh()
        assert not r.ok and "took longer than 0.5 s" in r.error
        assert w.proc is None  # killed, not left behind
        w.argv = fake(GOOD)
        assert w.refresh().ok
    finally:
        w.stop()


def test_a_worker_that_dies_is_reported_with_its_exit_and_replaced():
    w = Worker("all", 10, argv=fake("os._exit(3)"))
    try:
        r = w.refresh()
        assert not r.ok and r.error == "the refresh process ended (exit 3)"
        w.argv = fake("os.kill(os.getpid(), 9)")
        assert w.refresh().error == "the refresh process ended (signal 9)"
        w.argv = fake(GOOD)
        assert w.refresh().ok
    finally:
        w.stop()


def test_junk_and_errors_from_the_worker_are_one_line_reasons():
    w = Worker("all", 10, argv=fake('print("not json", flush=True)'))
    try:
        r = w.refresh()
        assert not r.ok and r.error.startswith("unreadable refresh output")
    finally:
        w.stop()
    r = parse_answer(b'{"error": "ctnetlink is not available", "cpu_seconds": 0.01}\n', 0.1)
    assert not r.ok and r.error == "ctnetlink is not available" and r.cpu_seconds == 0.01
    for junk in (b"[]", b'{"by_state": 3}', b'{"by_state": {}, "listing_error": {}, "findings": [[1]]}', b"\xff"):
        assert not parse_answer(junk, 0.1).ok


def test_a_grown_worker_is_replaced_after_its_answer():
    w = Worker("all", 10, argv=fake(GOOD))
    w.RECYCLE_RSS_MB = 10.0  # the fake reports 20 MB
    try:
        assert w.refresh().ok
        assert w.proc is None  # recycled: the next refresh starts a new one
        assert w.refresh().ok
    finally:
        w.stop()


def test_a_missing_interpreter_is_a_reason_not_an_exception(tmp_path):
    w = Worker("all", 10, argv=[str(tmp_path / "no-such-python")])
    r = w.refresh()
    assert not r.ok and r.error.startswith("could not run the refresh")


@pytest.mark.skipif(os.geteuid() != 0, reason="the real refresh reads the host's tables")
def test_the_real_worker_serves_refreshes_of_this_host():
    w = Worker("init", 60)
    try:
        a, b = w.refresh(), w.refresh()
        pid = w.proc.pid if w.proc else None
        assert a.ok and b.ok, (a.error, b.error)
        assert a.cpu_seconds > 0 and b.rss_mb > 5
        assert w.proc is not None and w.proc.pid == pid and w.served == 2
    finally:
        w.stop()


def test_the_request_carries_the_followed_kernel_log():
    echo = """
req = json.loads(line)
print(json.dumps({"by_state": {}, "listing_error": {}, "findings": [["LOG", str(len(req["kernel_log"] or "")),
                  req["wanted"]]]}), flush=True)
"""
    w = Worker("pod-a", 10, argv=fake(echo))
    try:
        assert w.refresh("[ 1.000000] nf_conntrack: table full, dropping packet\n").findings == [("LOG", "54", "pod-a")]
        assert w.refresh(None).findings == [("LOG", "0", "pod-a")]
    finally:
        w.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the real refresh reads the host's tables")
def test_given_the_followed_log_the_worker_runs_no_dmesg_and_judges_by_it(tmp_path, monkeypatch):
    marker = tmp_path / "dmesg-ran"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "dmesg").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (fake_bin / "dmesg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    full = "".join(f"[{100 + i:12.6f}] nf_conntrack: nf_conntrack: table full, dropping packet\n" for i in range(3))
    w = Worker("init", 60)
    try:
        r = w.refresh(full)
        assert r.ok, r.error
        assert ("CT002", "critical", "init") in r.findings  # the lines it was given
        assert not marker.exists()  # and no dmesg run for them
        assert ("CT002", "critical", "init") not in w.refresh("").findings
        assert w.refresh(None).ok and marker.exists()  # without a follower it reads dmesg itself
    finally:
        w.stop()


def test_past_1024_open_fds_the_worker_and_the_kernel_log_follower_still_wait(tmp_path):
    """A node with 1000 namespaces holds 2000+ fds: select() cannot wait on fd 1024 or above."""
    import resource
    import time

    from ctdoctor.sources.live import KernelLogFollower

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip("the fd limit is too low to pass 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    w = Worker("all", 10, argv=fake(GOOD))
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)

    class Reader:
        def name_of(self, ino, mono=None):
            return None

        def rediscover_soon(self, gap=1.0):
            pass

    f = KernelLogFollower(Reader(), names_init=True, path=str(fifo))
    try:
        assert w.refresh().ok
        f.start()
        wfd = os.open(fifo, os.O_WRONLY)
        assert wfd > 1024
        os.write(wfd, b"4,12,100000000,-;nf_conntrack: nf_conntrack: table full, dropping packet\n")
        deadline = time.monotonic() + 5
        while not f.counts and time.monotonic() < deadline:
            time.sleep(0.05)
        os.close(wfd)
        assert sum(f.counts.values()) == 1
        assert "table full" in (f.dmesg_text() or "")
    finally:
        f.stop()
        w.stop()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
