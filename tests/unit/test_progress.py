"""Progress on stderr: shown on a terminal once a step takes over its delay, never when piped, never for
JSON/CSV/Nagios, gone (transient) before the output."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_in_pty

SCRIPT = """
import sys, time
from ctdoctor.render.progress import Progress
with Progress(sys.argv[1], delay=0.2) as p:
    p.step("reading 3 listings")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and p._status is None and p.enabled:
        time.sleep(0.02)   # the spinner starts on its own thread: wait for it, not for a fixed time
    p("sampling the counters")
    time.sleep(0.3)
print("done")
"""


def _in_pty(fmt: str) -> str:
    return run_in_pty([sys.executable, "-c", SCRIPT, fmt], timeout=20)[1]


def test_progress_shows_on_a_terminal():
    screen = _in_pty("text")
    assert "reading 3 listings" in screen or "sampling the counters" in screen, screen
    assert screen.rstrip().endswith("done"), screen[-200:]


def test_progress_is_silent_for_machine_formats_on_a_terminal():
    for fmt in ("json", "csv", "nagios"):
        screen = _in_pty(fmt)
        assert "listings" not in screen and "sampling" not in screen, (fmt, screen)


def test_progress_is_silent_when_piped():
    r = subprocess.run([sys.executable, "-c", SCRIPT, "text"], capture_output=True, timeout=30)
    assert r.stdout.decode() == "done\n" and r.stderr == b""


def test_doctor_says_nothing_on_stderr_when_piped():
    from tests.conftest import IMAGES, run_cli

    _rc, out, err = run_cli("--root", str(IMAGES / "sosreport-node7-k8s"))
    assert out and err == ""
