"""The screens at 80×24 in a real terminal (tmux): the doctor's summary is on its first screen (or the
pager shows it), and `status --watch` fits the screen, shows its clock and quits on q. Every wait polls
the pane for a condition, up to a timeout; sessions have unique names and are always killed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import IMAGES, needs_kernel

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make system-deps)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Tmux:
    """One detached tmux session of 80×24 running a command; ``screen()`` is what a person sees."""

    def __init__(self, command: str, width: int = 80, height: int = 24, env: dict | None = None):
        self.name = f"ctdt-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in {"TERM": "xterm-256color", "PYTHONPATH": ROOT,
                                                               **(env or {})}.items())
        # the pane stays after the command ends (remain-on-exit), so its last screen and status can be read
        subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", "new-session", "-d", "-s", self.name,
                        "-x", str(width), "-y", str(height), f"env {envs} {command}; echo EXIT=$?; sleep 60"],
                       check=True, capture_output=True)

    def screen(self) -> str:
        r = subprocess.run(["tmux", "-L", self.name, "capture-pane", "-p", "-t", self.name], capture_output=True)
        return r.stdout.decode(errors="replace")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.name, "send-keys", "-t", self.name, *keys], check=True,
                       capture_output=True)

    def wait_for(self, cond, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while True:
            s = self.screen()
            if cond(s):
                return s
            if time.monotonic() > end:
                raise AssertionError(f"timed out; the screen was:\n{s}")
            time.sleep(0.1)  # polling the pane, not waiting for the program

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)


def ctdoctor(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "ctdoctor", *args))


def _fits(screen: str, width: int) -> None:
    for ln in screen.splitlines():
        assert len(ln.rstrip()) <= width, ln


def test_doctor_summary_is_on_the_first_screen_at_80x24():
    t = Tmux(ctdoctor("--root", str(IMAGES / "sosreport-node7-k8s")), env={"PAGER": "less -R"})
    try:
        s = t.wait_for(lambda s: "critical" in s and ("EXIT=" in s or "(END)" in s or s.rstrip().endswith(":")))
        lines = s.splitlines()
        assert any(re.search(r"\d+ critical, \d+ warning, \d+ info", ln) for ln in lines), s
        assert any(ln.startswith("CRIT CT001") for ln in lines), s  # the first finding, with its one line
        _fits(s, 80)
        if "EXIT=" not in s:  # the pager holds the report: q leaves it, the doctor's exit code follows
            t.keys("q")
            s = t.wait_for(lambda s: "EXIT=" in s)
        assert "EXIT=2" in s  # CRITICAL
    finally:
        t.kill()


@needs_kernel
@pytest.mark.kernel
def test_status_watch_fits_shows_the_clock_and_quits_on_q():
    t = Tmux(ctdoctor("status", "--watch", "0.5"))
    try:
        s = t.wait_for(lambda s: re.search(r"\d\d:\d\d:\d\d", s) is not None and "new/s" in s
                       and "count" in s)
        first = re.search(r"\d\d:\d\d:\d\d", s).group(0)
        assert "every 0.5 s" in s and "q quits" in s
        _fits(s, 80)
        assert len(s.rstrip("\n").splitlines()) <= 24
        # the clock moves: the screen is redrawn, in place (the header stays on top, once)
        s = t.wait_for(lambda s: (m := re.search(r"\d\d:\d\d:\d\d", s)) is not None and m.group(0) != first)
        assert s.count("ctdoctor status --watch") == 1, s
        t.keys("q")
        s = t.wait_for(lambda s: "EXIT=" in s, timeout=10)
        assert "EXIT=0" in s and "Traceback" not in s
    finally:
        t.kill()


@needs_kernel
@pytest.mark.kernel
@pytest.mark.parametrize("width", [80, 200])
def test_lab_run_fits_and_shows_no_python(width):
    """`lab run`'s report (built, observed, why) at 80 and 200 columns: no line past the width, no repr."""
    from tests.conftest import run_cli
    from tests.unit.test_widths import assert_fits

    rc, out, err = run_cli("lab", "run", "syn-unreplied", "--scale", "20", env={"COLUMNS": str(width)})
    assert rc == 0, err
    assert "observed" in out and "why" in out
    assert_fits(out, width, ("lab run", width))
