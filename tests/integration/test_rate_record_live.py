"""`top --rate` and `record` on the real kernel: lab traffic on loopback inside throwaway namespaces."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Netns, assert_one_line_error, needs_kernel, run_cli, run_json, wait_until

pytestmark = [needs_kernel, pytest.mark.kernel]


def paced(ns: Netns, src: str, per_second: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-m", "ctdoctor.lab.traffic", "paced",
                             src, "127.0.0.1", "5353", str(per_second), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def seen(ns: Netns, *sources: str) -> None:
    """Wait until the paced clients' first entries are in the table (a client starts as fast as the host lets it)."""
    wait_until(lambda: all(f"src={s} ".encode() in ns.run("conntrack", "-L").stdout for s in sources), timeout=30,
               what=f"traffic from {sources}")


def test_two_clients_come_out_in_order_at_their_rates():
    with Netns("rate") as ns:
        fast, slow = paced(ns, "127.0.0.2", 200, 7), paced(ns, "127.0.0.3", 50, 7)
        try:
            seen(ns, "127.0.0.2", "127.0.0.3")  # both sending before the window opens
            rc, doc = run_json("--netns", ns.name, "top", "--rate", "--by", "src", "--interval", "4")
            assert rc == 0
        finally:
            for p in (fast, slow):
                p.wait(20)
        rows = doc["rows"]
        assert [r["key"]["src"] for r in rows[:2]] == ["127.0.0.2", "127.0.0.3"]
        assert abs(rows[0]["rate"] - 200) <= 0.35 * 200, rows[0]
        assert abs(rows[1]["rate"] - 50) <= 0.35 * 50, rows[1]
        assert rows[0]["count"] == pytest.approx(rows[0]["rate"] * doc["seconds"], rel=0.01)
        assert doc["mode"] == "rate" and doc["lost_events"] is False and doc["lower_bound"] is False
        assert doc["namespaces"][0]["netns"] == ns.name


def test_rate_filters_and_csv_like_top():
    with Netns("rate") as ns:
        p = paced(ns, "127.0.0.4", 100, 4)
        try:
            seen(ns, "127.0.0.4")
            rc, out, err = run_cli("--netns", ns.name, "top", "--rate", "--by", "src,dport", "--interval", "2",
                                   "--src", "127.0.0.4/32", "--format", "csv")
        finally:
            p.wait(20)
        assert rc == 0, err
        lines = out.strip().splitlines()
        assert lines[0] == "src,dport,rate,count,share,states"
        src, dport, rate = lines[1].split(",")[:3]
        assert (src, dport) == ("127.0.0.4", "5353") and 60 <= float(rate) <= 140


def test_lost_events_make_the_rates_a_lower_bound():
    """A tiny receive buffer and a burst of 20,000 NEW events: the kernel reports ENOBUFS, and the
    window says its counts are a lower bound instead of passing them off as exact."""
    from ctdoctor.listing.query import parse_query
    from ctdoctor.monitor import rate
    from ctdoctor.sources import netns as nsmod

    with Netns("rate") as ns:
        (ref,) = nsmod.select(nsmod.discover(), ns.name)
        q = parse_query("src", None, None, None, None, None)
        with rate.EventCounter(ref, q, rcvbuf=4096) as ec:
            loader = threading.Thread(target=ns.load_established, args=(20000,))
            loader.start()
            w = ec.window(3.0)
            loader.join()
        assert w.lost is True and w.new < 20000
        doc = rate.build_doc(q, [[w]], 10, 1, 1)
        assert doc["lower_bound"] is True and "lower bound" in doc["notes"][0]


def test_rate_needs_the_live_kernel():
    image = str(Path(__file__).parent.parent / "images" / "bundle-vm-6.18")
    rc, _out, err = run_cli("--root", image, "top", "--rate")
    assert_one_line_error(rc, err, code=2, contains="running kernel")
    rc, _out, err = run_cli("top", "--rate", "--file", "/dev/null")
    assert_one_line_error(rc, err, code=2, contains="--file")


# ---- record ---------------------------------------------------------------------------------------


def fill_lines(n: int, src: str) -> str:
    from ctdoctor.lab.scenarios import _tcp_lines

    return _tcp_lines(n, dport=443, src=src)


def load(ns: Netns, text: str) -> None:
    path = f"/tmp/{ns.name}.fill"
    Path(path).write_text(text)
    try:
        ns.run("conntrack", "-R", path)
    finally:
        os.unlink(path)


class Recording:
    def __init__(self, directory: Path, *args: str):
        self.dir = directory
        self.argv = [sys.executable, "-m", "ctdoctor", "record", "--dir", str(directory), "--interval", "0.3",
                     "--rate-seconds", "1", *args]
        self.log = directory.parent / "record.log"

    def __enter__(self):
        self.f = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while b"watching" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "record did not start"
            time.sleep(0.1)
        return self

    def bundles(self) -> list[Path]:
        return sorted(self.dir.glob("*.tar.gz"))

    def stop(self) -> float:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return time.monotonic() - t

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.f.close()


def test_record_captures_a_filling_netns_that_every_command_reads_back(tmp_path):
    gmax = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    n = int(gmax * 0.6)
    # --netns: the test watches only the netns it made (another full one on the host is not its business)
    with Netns("rec") as ns, Recording(tmp_path / "incidents", "--threshold", "0.5", "--netns", ns.name) as rec:
        load(ns, fill_lines(n, "127.0.0.77"))
        deadline = time.monotonic() + 60
        while not rec.bundles():
            assert rec.proc.poll() is None, rec.log.read_text()
            assert time.monotonic() < deadline, rec.log.read_text()
            time.sleep(0.2)
        # the same netns still above the threshold: no second incident within the cool-down
        time.sleep(2)
        assert rec.proc.poll() is None
        took = rec.stop()
        assert took < 1.5 and rec.proc.returncode == 0
        (bundle,) = rec.bundles()
        assert bundle.name.endswith(f"-{ns.name}.tar.gz") and oct(bundle.stat().st_mode & 0o777) == "0o600"
        assert not [p for p in rec.dir.iterdir() if p.name.endswith(".tmp")]

        # read back offline: top names the filling source, the doctor too
        rc, top = run_json("--root", str(bundle), "--netns", ns.name, "top", "--by", "src", "--limit", "1")
        assert top["rows"][0]["key"]["src"] == "127.0.0.77" and top["rows"][0]["count"] == n
        doc = json.loads(run_cli("--root", str(bundle), "--format", "json")[1])
        ct013 = [f for f in doc["findings"] if f["id"] == "CT013" and f["netns"] == ns.name]
        assert ct013 and "127.0.0.77" in ct013[0]["summary"]
        assert any(x["name"] == ns.name and x["count"] >= n for x in doc["namespaces"])

        inc = run_json("incidents", "--dir", str(rec.dir))[1]["incidents"]
        assert len(inc) == 1
        assert inc[0]["netns"] == ns.name and inc[0]["trigger"] == "fill"
        assert inc[0]["top_source"] == "127.0.0.77" and inc[0]["peak_fill"] >= 0.5
        rc, out, _err = run_cli("incidents", "--dir", str(rec.dir))
        assert rc == 0 and ns.name in out and "127.0.0.77" in out


def test_record_stops_within_a_second_during_a_capture_and_leaves_no_temp_files(tmp_path):
    gmax = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    with Netns("rec") as ns, Recording(tmp_path / "incidents", "--threshold", "0.3",
                                       "--rate-seconds", "5", "--netns", ns.name) as rec:
        load(ns, fill_lines(int(gmax * 0.4), "127.0.0.78"))
        deadline = time.monotonic() + 30
        while b"capturing" not in rec.log.read_bytes():
            assert time.monotonic() < deadline, rec.log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # inside the 5 s rate window of the capture child
        took = rec.stop()
        assert took < 1.5, took
        assert rec.proc.returncode == 0
        # no half-written bundle, no spooled listing (in the folder, not TMPDIR); the lock stays, unlocked
        assert not rec.bundles() and [p.name for p in rec.dir.iterdir() if p.name.startswith(".")] == [
            ".ctdoctor-record.lock"]
        assert "stopped" in rec.log.read_text()


def test_rate_watch_keeps_a_rolling_window_and_quits_on_ctrl_c():
    with Netns("rate") as ns:
        p = paced(ns, "127.0.0.6", 100, 6)
        try:
            seen(ns, "127.0.0.6")
            w = subprocess.Popen([sys.executable, "-m", "ctdoctor", "--netns", ns.name, "top", "--rate", "--watch",
                                  "0.5", "--interval", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "COLUMNS": "200"})
            time.sleep(3.5)  # pacing: the watch runs longer than its 2 s window before it is stopped
            w.send_signal(signal.SIGINT)
            out, err = w.communicate(timeout=10)
        finally:
            p.wait(20)
        assert w.returncode == 0, err
        text = out.decode()
        assert "127.0.0.6" in text and "new/s" in text
        # the rolling window is --interval long, not the whole run: the last view covers ~2 s
        assert re.search(r"over 2(\.\d+)? s", text), text


def test_c_and_python_event_readers_agree():
    """The C drain (many datagrams per call, GIL released) and the one-recv-per-event Python loop see
    the same events and group them the same way."""
    from ctdoctor.listing.accel import accelerated
    from ctdoctor.listing.query import parse_query
    from ctdoctor.monitor import rate
    from ctdoctor.sources import netns as nsmod

    if not accelerated():
        pytest.skip("the C extension is not built")
    with Netns("rate") as ns:
        (ref,) = nsmod.select(nsmod.discover(), ns.name)
        q = parse_query("dport,proto", None, None, None, None, None)
        with rate.EventCounter(ref, q) as c_side, rate.EventCounter(ref, q, force_python=True) as py_side:
            loader = threading.Thread(target=ns.load_established, args=(5000,))
            loader.start()
            wins = rate.windows([c_side, py_side], 3.0)
            loader.join()
        a, b = (rate.build_doc(q, [[w]], None, 0, 1) for w in wins)
        assert a["new"] == b["new"] == 5000 and not a["lost_events"] and not b["lost_events"]
        assert [(r["key"], r["count"]) for r in a["rows"]] == [(r["key"], r["count"]) for r in b["rows"]]
