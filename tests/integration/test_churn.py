"""A Kubernetes node is never idle: namespaces appear and vanish during every command. Each reading
command runs 20 times while another thread creates and deletes namespaces as fast as it can (each
with a rule that makes conntrack track it): no run aborts, none prints a traceback, and every exit
code is the one the same command gives without the churn."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import NETNS_PREFIX, needs_kernel, run_cli, wait_until

pytestmark = [needs_kernel, pytest.mark.kernel]
RUNS = 20


class Churn:
    def __init__(self):
        self.prefix = f"{NETNS_PREFIX}ch{uuid.uuid4().hex[:4]}-"  # this run's: the host check sees leftovers
        self.stop = threading.Event()
        self.made = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = f"{self.prefix}{i % 12}"
            subprocess.run(["ip", "netns", "add", name], capture_output=True)
            rule = ("add table inet t; add chain inet t o { type filter hook output priority 0; }; "
                    "add rule inet t o ct state new accept")
            subprocess.run(["ip", "netns", "exec", name, "nft", rule], capture_output=True)
            subprocess.run(["ip", "netns", "del", f"{self.prefix}{(i + 6) % 12}"], capture_output=True)
            self.made += 1
            i += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        for i in range(12):
            subprocess.run(["ip", "netns", "del", f"{self.prefix}{i}"], capture_output=True)


# The commands whose exit code says what they found read this run's namespaces only (init, the churn's
# and one that stays): another session's full lab netns may appear or vanish between two runs and
# rightly change their verdict. The exporter and collect exit 0 whatever they find: they read them all.
SCOPE = f"init,{NETNS_PREFIX}*"
COMMANDS = {
    "doctor-text": ["doctor", "--netns", SCOPE, "--interval", "0.2"],
    "doctor-json": ["doctor", "--netns", SCOPE, "--interval", "0.2", "--format", "json"],
    "doctor-nagios": ["doctor", "--netns", SCOPE, "--interval", "0.2", "--format", "nagios"],
    "status": ["status", "--netns", SCOPE, "--interval", "0.2"],
    "top": ["top", "--netns", SCOPE, "--by", "netns,state"],
    "plan": ["plan", "--netns", SCOPE],
    "exporter": ["exporter", "--netns", "all", "--textfile", "{tmp}", "--once"],
    "collect": ["collect", "--no-entries", "-o", "{tmp}/bundle.tar.gz"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_reading_commands_never_abort_while_namespaces_come_and_go(name, tmp_path, netns):
    # `netns` stays through all runs: SCOPE's glob names one netns also when the churn has none
    argv = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[name]]
    base_rc, _out, base_err = run_cli(*argv)
    assert base_rc in (0, 1, 2, 3) and "Traceback" not in base_err, base_err
    with Churn() as churn:
        wait_until(lambda: churn.made >= 3, timeout=60)  # the churn is under way before the first run
        for i in range(RUNS):
            rc, _out, err = run_cli(*argv)
            assert "Traceback" not in err and "internal error" not in err, (i, err)
            assert rc == base_rc, f"run {i}: exit {rc}, without churn {base_rc}: {err[-400:]}"
    assert churn.made > RUNS, "the churn ran"


def test_record_survives_churn(tmp_path):
    with Churn() as churn:
        wait_until(lambda: churn.made >= 3, timeout=60)
        for i in range(RUNS):
            p = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "ctdoctor", "record", "--dir",
                                  str(tmp_path / "inc"), "--netns", "all", "--interval", "0.1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert p.stdout is not None
            first = p.stdout.readline()  # "watching every 0.1s ...": it runs (namespaces found, files held)
            assert "watching" in first, first
            time.sleep(0.3 + 0.05 * (i % 7))  # stopped at a different point of its loop each time
            p.send_signal(signal.SIGTERM)
            try:
                _out, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
                _out, err = p.communicate(timeout=30)
                pytest.fail(f"run {i}: record did not stop within 30 s of SIGTERM:\n{err[-3000:]}")
            assert "Traceback" not in err and "internal error" not in err, (i, err)
            assert p.returncode in (0, 143, -signal.SIGTERM), (i, p.returncode, err)
