"""Shared fixtures: running the CLI, host images, and throwaway network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
IMAGES = HERE / "images"
DATA = HERE / "data"
NETNS_PREFIX = "ctdt-"


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 120,
            as_nobody: bool = False):
    """Run ``python -m ctdoctor ARGS`` and return (rc, stdout, stderr)."""
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    prefix = []
    if as_nobody and os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = subprocess.run([*prefix, sys.executable, "-m", "ctdoctor", *args], input=input, capture_output=True,
                       env=e, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def run_json(*args: str, **kw):
    rc, out, err = run_cli(*args, "--format", "json", **kw)
    assert out.strip(), f"no output (rc={rc}): {err}"
    return rc, json.loads(out)


def assert_one_line_error(rc: int, err: str, *, code: int = 2, contains: str = "") -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    assert len(lines) == 1, f"expected a one-line error, got: {err!r}"
    assert "Traceback" not in err
    assert lines[0].startswith("ctdoctor: error:") or lines[0].startswith("usage:") or "error:" in lines[0]
    if contains:
        assert contains in lines[0], lines[0]


def kernel_lab_available() -> str | None:
    """Why real-kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            return f"needs the '{tool}' command"
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
        return "kernel without conntrack"
    return None


needs_kernel = pytest.mark.skipif(kernel_lab_available() is not None, reason=str(kernel_lab_available()))


def sh(*cmd: str, ns: str | None = None, check: bool = True, input: bytes | None = None):
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(argv, check=check, capture_output=True, input=input)


class Netns:
    """A throwaway netns with lo up and an nft rule that makes conntrack track it."""

    def __init__(self, tag: str = ""):
        self.name = f"{NETNS_PREFIX}{tag}{uuid.uuid4().hex[:6]}"

    def __enter__(self):
        sh("ip", "netns", "add", self.name)
        try:
            sh("ip", "link", "set", "lo", "up", ns=self.name)
            sh("nft", "add table inet ctdt; add chain inet ctdt out { type filter hook output priority 0; };"
                      " add rule inet ctdt out ct state new accept", ns=self.name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def run(self, *cmd, **kw):
        return sh(*cmd, ns=self.name, **kw)

    def load_established(self, n: int, dport: int = 80, src: str = "127.0.0.1", dst: str = "127.0.0.2") -> None:
        """Load n ASSURED ESTABLISHED TCP entries over ctnetlink (conntrack -R)."""
        lines = "".join(
            f"-A -t 431999 -u SEEN_REPLY,ASSURED -s {src} -d {dst} -r {dst} -q {src} -p tcp "
            f"--sport {1024 + i % 60000} --dport {dport + i // 60000} --reply-port-src {dport + i // 60000} "
            f"--reply-port-dst {1024 + i % 60000} --state ESTABLISHED\n" for i in range(n))
        self.load(lines)

    def load(self, save_lines: str) -> None:
        """Load entries written as `conntrack -o save` lines over ctnetlink (conntrack -R)."""
        path = f"/tmp/{self.name}-{os.getpid()}.ct"
        with open(path, "w") as f:
            f.write(save_lines)
        try:
            self.run("conntrack", "-R", path)
        finally:
            os.unlink(path)

    def count(self) -> int:
        return int(self.run("sysctl", "-n", "net.netfilter.nf_conntrack_count").stdout)


@pytest.fixture
def netns():
    with Netns() as ns:
        yield ns


@pytest.fixture
def lab():
    """Start lab scenarios as fixtures: ``run = lab("table-full")``; all are removed afterwards."""
    from ctdoctor.lab import run_scenario

    active = []

    def start(name, scale=None):
        cm = run_scenario(name, scale)
        run = cm.__enter__()
        active.append(cm)
        return run

    yield start
    for cm in reversed(active):
        cm.__exit__(None, None, None)


# ---- host state guard: tests must leave the host as they found it -------------------


def host_state() -> dict:
    state = {}
    base = "/proc/sys/net/netfilter"
    if os.path.isdir(base):
        for n in sorted(os.listdir(base)):
            if n == "nf_conntrack_count":
                continue
            try:
                with open(f"{base}/{n}") as f:
                    state[n] = f.read().strip()
            except OSError:
                pass
    if shutil.which("nft") and os.geteuid() == 0:
        state["nft ruleset"] = subprocess.run(["nft", "list", "ruleset"], capture_output=True).stdout.decode()
    if shutil.which("ip"):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True).stdout.decode()
        state["netns"] = sorted(ln.split()[0] for ln in out.splitlines()
                                if ln.startswith((NETNS_PREFIX, "ctdlab-")))
    return state


def pytest_configure(config):
    config._ctd_host_state = host_state()


# Hypothesis: derandomised in CI (reproducible), fresh examples on a developer's machine.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


def assert_exit_matches(rc: int, doc: dict) -> None:
    """The doctor's exit code is the Nagios status its report implies (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
    s = doc["summary"]
    want = 2 if s["critical"] else 1 if s["warning"] else 3 if any(u["id"] == "CT001" for u in doc["unknown"]) else 0
    assert rc == want, f"exit {rc}, but the report says {want}: {s}"
