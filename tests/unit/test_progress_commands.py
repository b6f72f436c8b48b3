"""Progress of top's listing reads (and of collect and flush: tests/integration/test_progress_live.py) goes
through render/progress.py: on a terminal for text output once a step takes its delay (here 0 s, the
step made 0.5 s slow, so a fast test machine still sees it), never when piped, never for JSON or CSV."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import IMAGES, run_in_pty

# The CLI with the progress delay at 0 and, named by ``module:attr``, a function made 0.5 s slower
SCRIPT = """
import importlib, sys, time
from ctdoctor.render import progress
progress.Progress.__init__.__defaults__ = ("text", None, 0.0)
if sys.argv[1]:
    mod, attr = sys.argv[1].split(":")
    m = importlib.import_module(mod)
    real = getattr(m, attr)
    def slow(*a, **k):
        time.sleep(0.5)
        return real(*a, **k)
    setattr(m, attr, slow)
from ctdoctor import cli
rc = cli.main(sys.argv[2:])
sys.stdout.flush()
sys.exit(rc)
"""

K8S = str(IMAGES / "sosreport-node7-k8s")


def in_pty(argv: list[str], slow: str = "", timeout: float = 60) -> tuple[int, str]:
    """(exit code, the screen: stdout and stderr on one terminal)."""
    return run_in_pty([sys.executable, "-c", SCRIPT, slow, *argv], env={"LINES": "24"}, timeout=timeout)


def piped(argv: list[str], slow: str = "", timeout: float = 60) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-c", SCRIPT, slow, *argv], capture_output=True, timeout=timeout,
                       env={**os.environ, "COLUMNS": "80"})
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_top_says_it_reads_the_entries_on_a_terminal():
    rc, screen = in_pty(["--root", K8S, "top"], "ctdoctor.top.report:build_doc")
    assert rc == 0, screen
    assert "reading the entries" in screen, screen
    assert "grouped by src" in screen  # and the table follows, whole


def test_top_lays_out_a_long_table_with_progress():
    rc, screen = in_pty(["--root", K8S, "top", "--limit", "0"], "ctdoctor.render.top_text:render")
    assert rc == 0, screen
    assert "laying out" in screen and "rows" in screen, screen


def test_top_says_nothing_when_piped_or_for_machine_formats():
    rc, out, err = piped(["--root", K8S, "top"], "ctdoctor.top.report:build_doc")
    assert rc == 0 and "grouped by src" in out and "reading" not in err + out, err
    for fmt in ("json", "csv"):
        rc, screen = in_pty(["--root", K8S, "top", "--format", fmt], "ctdoctor.top.report:build_doc")
        assert rc == 0, screen
        assert "reading the entries" not in screen, (fmt, screen)


def test_top_text_is_the_same_with_or_without_a_progress_display():
    from tests.conftest import run_cli

    rc, out, err = piped(["--root", K8S, "--netns", "all", "top", "--by", "src,state"])
    rc2, out2, _err = run_cli("--root", K8S, "--netns", "all", "top", "--by", "src,state", env={"COLUMNS": "80"})
    assert rc == rc2 == 0 and out == out2, err
