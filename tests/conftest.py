"""Shared fixtures: running the CLI (in-process or spawned), host images, throwaway network namespaces,
waiting on conditions, and the check at the end of a session that the host is as it was found."""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
IMAGES = HERE / "images"
DATA = HERE / "data"
# Per run: two sessions on one host (two engineers, two CI jobs) never see each other's namespaces.
NETNS_PREFIX = f"ctdt-{os.getpid()}-"

# ---- running the CLI ------------------------------------------------------------------------------
#
# In-process by default (no interpreter start and imports per call: the unit suite runs in half the
# time); spawned as ``python -m ctdoctor`` when the call needs a real process: another user
# (``as_nobody``), an environment variable that the code reads when a module is imported or that
# kills the process (anything outside IN_PROCESS_ENV), a call from another thread than the main one,
# a test under tests/integration (live namespaces, setns, forks), ``spawn=True``, or CTDT_SPAWN=1
# for the whole session.
# tests/unit/test_cli_in_process.py shows that both ways print the same bytes.

IN_PROCESS_ENV = frozenset({"COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "CTDOCTOR_NO_ACCEL", "CTDOCTOR_DEBUG"})


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float | None = 120,
            as_nobody: bool = False, spawn: bool | None = None):
    """Run ``ctdoctor ARGS`` and return (rc, stdout, stderr) as a user sees them."""
    if spawn if spawn is not None else spawns(as_nobody=as_nobody, env=env):
        return run_cli_spawned(*args, input=input, env=env, timeout=timeout, as_nobody=as_nobody)
    return run_cli_in_process(*args, input=input, env=env, timeout=timeout)


def spawns(*, as_nobody: bool = False, env: dict | None = None) -> bool:
    """Whether run_cli takes a real process for a call (see above)."""
    return (as_nobody or bool(set(env or ()) - IN_PROCESS_ENV) or bool(os.environ.get("CTDT_SPAWN"))
            or threading.current_thread() is not threading.main_thread()  # signal handlers: main thread only
            or "integration" in Path(os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0]).parts)


def run_cli_spawned(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float | None = 120,
                    as_nobody: bool = False):
    """``python -m ctdoctor ARGS`` in a child process."""
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    prefix = []
    if as_nobody and os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = subprocess.run([*prefix, sys.executable, "-m", "ctdoctor", *args], input=input, capture_output=True,
                       env=e, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


class _TimedOut(BaseException):
    """Raised in the command by SIGALRM; a BaseException, so no ``except Exception`` swallows it."""


_module_state_ready = False


def _import_every_module() -> None:
    """Import all of ctdoctor once, before the first in-process run: then no module is first imported
    (with its process-wide state) during a run, and every run's changes to that state can be undone."""
    global _module_state_ready
    if _module_state_ready:
        return
    import ctdoctor

    base = Path(ctdoctor.__file__).parent
    for py in sorted(base.rglob("*.py")):  # by file: some folders are namespace packages (no __init__)
        parts = py.relative_to(base).with_suffix("").parts
        if parts[-1] != "__main__":
            with contextlib.suppress(ImportError):
                importlib.import_module(".".join(("ctdoctor", *parts)).removesuffix(".__init__"))
    _module_state_ready = True


def _module_state() -> list[tuple[dict, dict, list[tuple[Any, Any]]]]:
    """Each ctdoctor module's globals, and a copy of each mutable container among them."""
    state = []
    for name, mod in list(sys.modules.items()):
        if (name == "ctdoctor" or name.startswith("ctdoctor.")) and mod is not None:
            ns = vars(mod)
            copies = [(v, v.copy()) for v in ns.values() if type(v) in (dict, list, set)]
            state.append((ns, dict(ns), copies))
    return state


def _restore_module_state(state) -> None:
    for ns, names, copies in state:
        for k in [k for k in ns if k not in names and not isinstance(ns[k], types.ModuleType)]:
            del ns[k]  # (a submodule first imported in the run stays where sys.modules has it)
        for k, v in names.items():
            if ns.get(k) is not v:
                ns[k] = v
        for live, copy in copies:
            if live != copy:
                live.clear()
                live.update(copy) if isinstance(live, dict | set) else live.extend(copy)
        for v in names.values():
            if callable(getattr(v, "cache_clear", None)) and getattr(v, "__module__", "").startswith("ctdoctor"):
                v.cache_clear()


def run_cli_in_process(*args: str, input: bytes | None = None, env: dict | None = None,
                       timeout: float | None = 120):
    """``ctdoctor.cli.main(ARGS)`` in this process, as a process would run it: stdin, stdout and stderr
    are files of their own, the environment is the call's, and what the run changed in this process
    (environment, signal handlers, working directory, file limit, the collector, module globals) is
    put back afterwards. The atexit handlers it registered (unpacked images) run at its end, as at a
    process's exit. A timeout raises subprocess.TimeoutExpired, as subprocess.run does."""
    _import_every_module()
    from ctdoctor import cli

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_signals = {s: signal.getsignal(s) for s in signal.valid_signals()
                     if s not in (signal.SIGKILL, signal.SIGSTOP)}
    saved_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    saved_gc = gc.isenabled()
    saved_modules = _module_state()
    exit_handlers: list[tuple[Callable, tuple, dict]] = []
    real_register = atexit.register

    def register(func, *a, **kw):
        exit_handlers.append((func, a, kw))
        return func

    def alarm(_signum, _frame):
        raise _TimedOut

    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        fin.write(input or b"")
        fin.seek(0)
        saved_fds = [os.dup(fd) for fd in (0, 1, 2)]  # a pager or any child writes to the fds, as a user sees
        code: int
        try:
            os.environ.update({"COLUMNS": "200", **(env or {})})
            for f, fd in ((fin, 0), (fout, 1), (ferr, 2)):
                os.dup2(f.fileno(), fd)
            sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - closed below
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
            atexit.register = register
            signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout or 0)  # None: no limit, as subprocess.run
            try:
                code = cli.main(list(args))
            except SystemExit as e:  # what the interpreter makes of it at exit
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except _TimedOut:
                raise subprocess.TimeoutExpired(["ctdoctor", *args], timeout) from None
            except Exception:  # an uncaught exception: its traceback and exit 1, as a process
                traceback.print_exc()
                code = 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                for func, a, kw in reversed(exit_handlers):
                    with contextlib.suppress(Exception):
                        func(*a, **kw)
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(OSError, ValueError):
                        stream.flush()
        finally:
            atexit.register = real_register
            for stream in (sys.stdin, sys.stdout, sys.stderr):
                if stream not in saved_streams:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((0, 1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            for s, h in saved_signals.items():
                if h is not None and signal.getsignal(s) is not h:
                    with contextlib.suppress(OSError, ValueError):
                        signal.signal(s, h)
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_NOFILE, saved_nofile)
            (gc.enable if saved_gc else gc.disable)()
            _restore_module_state(saved_modules)
        fout.seek(0)
        ferr.seek(0)
        return code, fout.read().decode(), ferr.read().decode()


def wait_until(pred: Callable[[], Any], timeout: float = 10, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``pred`` until it returns something true, and return that; fail after ``timeout`` seconds.
    A test waits for the condition it needs, never for a guessed time."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or getattr(pred, '__name__', 'condition')}")
        time.sleep(interval)


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
        global _touched_host
        _touched_host = True
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

    global _touched_host
    _touched_host = True
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
#
# Checked when the session ends (not by a test that must run last), if any test of it could touch the
# host: one under tests/integration, or one that made a namespace. Other sessions may run on the same
# host at the same time: only namespaces of this run (NETNS_PREFIX has its pid) must be gone; a lab
# namespace (their names are the lab's own) that appeared during the session is waited for a little,
# then named as a warning, since it may be another session's.

_touched_host = False


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
        state["netns"] = sorted(ln.split()[0] for ln in out.splitlines() if ln.startswith(NETNS_PREFIX))
        state["lab netns"] = sorted(ln.split()[0] for ln in out.splitlines() if ln.startswith("ctdlab-"))
    return state


def pytest_configure(config):
    config._ctd_host_state = host_state()


def host_changes(before: dict, after: dict) -> tuple[list[str], list[str]]:
    """What differs between two host_state()s: (errors, warnings)."""
    errors = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
              if k not in ("netns", "lab netns") and before.get(k) != after.get(k)]
    if after.get("netns"):
        errors.append(f"namespaces left behind: {after['netns']}")
    new_lab = sorted(set(after.get("lab netns", ())) - set(before.get("lab netns", ())))
    said = f"lab namespaces that appeared during the session are still there (this session's or another's): {new_lab}"
    warnings = [said] if new_lab else []
    return errors, warnings


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    ran_on_host = _touched_host or any("integration" in Path(str(item.path)).parts for item in session.items)
    if not ran_on_host or not hasattr(session.config, "_ctd_host_state"):
        return
    before = session.config._ctd_host_state
    after = host_state()
    if set(after.get("lab netns", ())) - set(before.get("lab netns", ())):
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not (set(host_state().get("lab netns", ())) - set(before.get("lab netns", ()))),
                       timeout=5, interval=0.2)
        after = host_state()
    errors, warnings = host_changes(before, after)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    for w in warnings:
        if tr is not None:
            tr.write_line("")
            tr.write_line(f"WARNING host check: {w}", yellow=True)
    if errors:
        if tr is not None:
            tr.write_line("")
            tr.write_sep("=", "the suite left the host changed", red=True)
            for e in errors:
                tr.write_line(e, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


def run_in_pty(argv: list[str], env: dict | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a terminal of its own (stdin, stdout and stderr on one pty): (exit code, the
    screen as it was written). What a user at a terminal sees: colours, a pager, progress."""
    import pty
    import select

    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                         env={**os.environ, "TERM": "xterm", "COLUMNS": "80", **(env or {})})
    os.close(slave)
    out = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every end of the terminal is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
    finally:
        rc = p.wait(10)
        os.close(master)
    return rc, out.decode(errors="replace")
