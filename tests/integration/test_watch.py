"""--watch redraws in place on a terminal and exits cleanly on q or Ctrl-C."""

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import needs_kernel

pytestmark = [needs_kernel, pytest.mark.kernel]


def _spawn(args):
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "ctdoctor", *args], stdin=slave, stdout=slave, stderr=slave,
                         env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    return p, master


def _read(master, seconds):
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                out += os.read(master, 65536)
            except OSError:
                break
    return out.decode(errors="replace")


def test_top_watch_quits_on_q(lab):
    run = lab("syn-unreplied", 40)
    p, master = _spawn(["--netns", run.netns.name, "top", "--by", "dport", "--watch", "0.3"])
    try:
        screen = _read(master, 2.5)
        assert "9999" in screen and "Δ" in screen, screen[-500:]
        os.write(master, b"q")
        assert p.wait(timeout=5) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)


def _status_watch_stops(stop) -> None:
    p, master = _spawn(["status", "--watch", "0.3"])
    try:
        screen = _read(master, 2.0)
        assert "count" in screen and "max" in screen and "fill" in screen
        stop(p, master)
        assert p.wait(timeout=5) == 0
        assert "Traceback" not in _read(master, 0.3)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)


def test_status_watch_exits_on_ctrl_c():
    _status_watch_stops(lambda p, master: p.send_signal(signal.SIGINT))


def test_status_watch_quits_on_q_as_top_does():
    _status_watch_stops(lambda p, master: os.write(master, b"q"))
