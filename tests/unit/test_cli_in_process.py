"""run_cli runs the CLI in this process (no interpreter start per call); what it returns must be what a
user sees from ``python -m ctdoctor``: the same exit code and the same bytes on stdout and stderr, for
text, colour, JSON, CSV, Nagios, help, usage errors, stdin, and a command that fails. And a run leaves
no trace in this process: environment, working directory, signal handlers, streams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import DATA, IMAGES, run_cli_in_process, run_cli_spawned, spawns

RHEL7 = str(IMAGES / "sosreport-gw01-rhel7")
K8S = str(IMAGES / "sosreport-node7-k8s")
BUNDLE = str(IMAGES / "bundle-vm-6.18")

CASES = [
    (["--root", RHEL7], {}, None),
    (["--root", RHEL7, "--color", "always", "doctor", "--verbose"], {}, None),
    (["--root", K8S, "--format", "json"], {}, None),
    (["--root", K8S, "--format", "nagios"], {}, None),
    (["--root", BUNDLE, "status"], {"COLUMNS": "80"}, None),
    (["--root", K8S, "top", "--by", "src,state", "--format", "csv"], {}, None),
    (["--root", RHEL7, "plan"], {"NO_COLOR": "1"}, None),
    (["top", "--file", "-", "--by", "dport"], {"CTDOCTOR_NO_ACCEL": "1"}, (DATA / "conntrack_L_6.18").read_bytes()),
    (["explain", "CT001"], {}, None),
    (["--help"], {"COLUMNS": "100"}, None),
    (["stauts"], {}, None),  # a usage error: one line, exit 2
    (["--root", "/nonexistent/image", "status", "--format", "nagios"], {}, None),  # an error as Nagios' UNKNOWN
    (["--version"], {}, None),
]


@pytest.mark.parametrize("argv,env,stdin", CASES, ids=[" ".join(c[0]).replace(str(IMAGES) + "/", "")[:60]
                                                       for c in CASES])
def test_in_process_prints_the_same_bytes_as_a_spawned_run(argv, env, stdin):
    spawned = run_cli_spawned(*argv, env=env, input=stdin)
    in_process = run_cli_in_process(*argv, env=env, input=stdin)
    assert in_process == spawned
    assert spawned[1] or spawned[2]  # the case prints something


def test_a_run_leaves_this_process_as_it_was(tmp_path):
    before = (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP),
              sys.stdin, sys.stdout, sys.stderr)
    rc, out, _err = run_cli_in_process("--root", RHEL7, "--color", "always")  # sets FORCE_COLOR, signal handlers
    assert rc == 2 and "\x1b[" in out
    assert (dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP),
            sys.stdin, sys.stdout, sys.stderr) == before


def test_which_calls_spawn(monkeypatch):
    """as_nobody and an environment variable read at import (or one that kills the process) take a real
    process, and so does every call of a test under tests/integration; the rest runs in-process."""
    assert not spawns() and not spawns(env={"COLUMNS": "80", "NO_COLOR": "1", "CTDOCTOR_NO_ACCEL": "1"})
    assert spawns(as_nobody=True)
    assert spawns(env={"CTDOCTOR_FILL_WARNING": "0.5"}) and spawns(env={"TMPDIR": "/tmp"})
    assert spawns(env={"CTDOCTOR_CRASH_AT": "mid-write"})
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/integration/test_top_live.py::test_x (call)")
    assert spawns()


def test_a_timeout_raises_as_subprocess_does(tmp_path):
    fifo = tmp_path / "never"
    os.mkfifo(fifo)  # opening it for reading blocks: the run never ends by itself
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli_in_process("top", "--file", str(fifo), timeout=0.5)
