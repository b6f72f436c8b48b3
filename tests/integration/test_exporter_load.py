"""The real exporter under load inside a pids cgroup capped at 512 tasks (the shipped unit's
TasksMax): 2000 idle connections held open while 200 concurrent scrapes all succeed within 1 s each,
with a handful of threads and flat memory. Everything listens on 127.0.0.1; the cgroup, the
connections and the exporter are removed also when the test fails."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest

from tests.conftest import needs_kernel, wait_until

pytestmark = [needs_kernel, pytest.mark.kernel]
PIDS = "/sys/fs/cgroup/pids"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def scrape(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@pytest.fixture
def pids_cgroup():
    if not os.access(PIDS, os.W_OK):
        pytest.skip("no writable cgroup v1 pids hierarchy")
    path = f"{PIDS}/ctdtest-{uuid.uuid4().hex[:8]}"
    os.mkdir(path)
    try:
        with open(f"{path}/pids.max", "w") as f:
            f.write("512")
        yield path
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"{path}/cgroup.procs") as f:
                left = [int(x) for x in f.read().split()]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        os.rmdir(path)


def test_idle_connections_never_starve_scrapes_in_a_512_task_cgroup(pids_cgroup):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    procs = f"{pids_cgroup}/cgroup.procs"

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test holds 2000 sockets
    # the shell joins the cgroup, then becomes the exporter: it and all it starts count against 512
    exp = subprocess.Popen(["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, sys.executable, "-m", "ctdoctor",
                            "exporter", "--web.listen-address", f"127.0.0.1:{port}", "--refresh", "5"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    idle: list[socket.socket] = []
    try:
        end = time.monotonic() + 30
        while True:
            try:
                assert scrape(url, 2)[0] == 200
                break
            except OSError:
                if time.monotonic() > end or exp.poll() is not None:
                    raise
                time.sleep(0.2)
        before = rss_mb(exp.pid)
        for _ in range(2000):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.append(s)
        # the server has accepted them all: none waits in the listening socket's accept queue
        wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
                   .stdout.split()[1:2] == ["0"], timeout=30, what="the accept queue to drain")

        n = 200
        barrier = threading.Barrier(n)
        res: list = [None] * n

        def one(i: int) -> None:
            barrier.wait()
            t = time.perf_counter()
            try:
                code, body = scrape(url)
                res[i] = (code == 200 and b"ctdoctor_conntrack_entries{" in body, time.perf_counter() - t)
            except OSError as e:
                res[i] = (False, str(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        failed = [r for r in res if not (r and r[0])]
        assert not failed, failed[:5]
        slowest = max(r[1] for r in res)
        assert slowest <= 1.0, f"the slowest of {n} concurrent scrapes took {slowest:.2f} s"

        with open(f"{pids_cgroup}/pids.current") as f:
            tasks = int(f.read())
        assert tasks < 40, f"{tasks} tasks: a thread per connection?"
        for s in idle[:50]:  # the idle ones are still open (nothing evicted or timed out yet)
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        _code, body = scrape(url)
        text = body.decode()
        conns = next(float(ln.split()[-1]) for ln in text.splitlines()
                     if ln.startswith("ctdoctor_exporter_http_connections "))
        assert conns >= 2000
        assert 'ctdoctor_exporter_http_rejected_total{reason="busy"} 0.0' in text
        assert "process_resident_memory_bytes" in text and "ctdoctor_build_info{" in text
        after = rss_mb(exp.pid)
        assert after - before < 25, f"RSS {before:.1f} -> {after:.1f} MB"
    finally:
        for s in idle:
            s.close()
        exp.terminate()
        try:
            exp.wait(15)
        except subprocess.TimeoutExpired:
            exp.kill()
            exp.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert exp.returncode in (0, -15, 143), exp.stderr.read().decode()[-500:] if exp.stderr else ""
