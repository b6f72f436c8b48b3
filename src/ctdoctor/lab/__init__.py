"""The lab: reproduce conntrack incidents on the real kernel inside throwaway network namespaces.

Every scenario builds a netns named ``ctdlab-<scenario>-<hex>``, uses loopback
addresses only, never changes a host-wide setting (``nf_conntrack_max`` is
global, so tables are filled *up to* it with entries loaded over ctnetlink),
and removes everything when it ends — also after Ctrl-C or SIGTERM; ``lab
clean`` removes what a SIGKILL left behind, found by the prefix.

Scenario runs are context managers, so tests use them as fixtures::

    with run_scenario("table-full") as run:
        ... run.netns.name, run.observed["drop_delta"] ...
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ctdoctor.errors import Failure, UsageError
from ctdoctor.listing.entry import Entry, iter_entries
from ctdoctor.model import kernel
from ctdoctor.sources.kernlog import parse_kernel_log
from ctdoctor.sources.stats import parse_proc_stat
from ctdoctor.sources.system import parse_kernel_release

PREFIX = "ctdlab-"
TOOLS = {"ip": "iproute2", "nft": "nftables", "conntrack": "conntrack", "ss": "iproute2"}


class LabError(Failure):
    pass


def missing_requirements() -> list[str]:
    """What this machine lacks to run the lab (empty when it can)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (the lab creates network namespaces and nft tables)")
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            out.append(f"the '{tool}' command (Debian package {pkg})")
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
        out.append("a kernel with nf_conntrack")
    return out


def _run(argv: list[str], *, check: bool = True, input: bytes | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(argv, capture_output=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace').strip()[:300]}")
    return r


class Helper(subprocess.Popen[str]):
    """A traffic helper process: its pipes (always opened), and the JSON it printed when ready."""

    ready: dict[str, Any]  # set by LabNetns.spawn from the helper's first line

    @property
    def inp(self) -> IO[str]:
        assert self.stdin is not None
        return self.stdin

    @property
    def out(self) -> IO[str]:
        assert self.stdout is not None
        return self.stdout

    @property
    def err(self) -> IO[str]:
        assert self.stderr is not None
        return self.stderr


class LabNetns:
    """A throwaway netns with lo up and an nft rule that makes conntrack track its traffic."""

    def __init__(self, scenario: str):
        self.name = f"{PREFIX}{scenario}-{uuid.uuid4().hex[:4]}"
        self.procs: list[Helper] = []
        self.inode: int | None = None

    def create(self) -> LabNetns:
        _run(["ip", "netns", "add", self.name])
        self.inode = os.stat(f"/run/netns/{self.name}").st_ino
        self.exec("ip", "link", "set", "lo", "up")
        # A fresh netns tracks nothing until a rule uses conntrack.
        self.nft("add table inet ctdlab; add chain inet ctdlab out { type filter hook output priority 0; };"
                 " add rule inet ctdlab out ct state new accept")
        return self

    def exec(self, *argv: str, check: bool = True, input: bytes | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return _run(["ip", "netns", "exec", self.name, *argv], check=check, input=input, timeout=timeout)

    def nft(self, script: str) -> None:
        self.exec("nft", script)

    def traffic(self, *args: object, timeout: float = 60) -> dict[str, Any]:
        r = self.exec(sys.executable, "-m", "ctdoctor.lab.traffic", *map(str, args), timeout=timeout)
        doc: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
        return doc

    def spawn(self, *args: object) -> Helper:
        """A long-running traffic helper; its first output line is read (it says it is ready)."""
        p = Helper(["ip", "netns", "exec", self.name, sys.executable, "-m", "ctdoctor.lab.traffic",
                    *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, bufsize=1)
        self.procs.append(p)
        line = p.out.readline()
        if not line:
            raise LabError(f"traffic helper {args[0]} did not start: {p.err.read()[:300]}")
        p.ready = json.loads(line)
        return p

    @staticmethod
    def ask(p: Helper, command: str, timeout: float = 30) -> dict[str, Any]:
        p.inp.write(command + "\n")
        p.inp.flush()
        r, _, _ = select.select([p.out], [], [], timeout)
        if not r:
            raise LabError(f"traffic helper did not answer '{command}'")
        doc: dict[str, Any] = json.loads(p.out.readline())
        return doc

    # ---- reading the netns ---------------------------------------------------

    def sysctl(self, key: str) -> int:
        return int(self.exec("cat", "/proc/sys/" + key.replace(".", "/")).stdout)

    def count(self) -> int:
        return self.sysctl("net.netfilter.nf_conntrack_count")

    def stats(self) -> dict[str, int]:
        return parse_proc_stat(self.exec("cat", "/proc/net/stat/nf_conntrack").stdout.decode()).sums

    def entries(self) -> list[Entry]:
        text = self.exec("cat", "/proc/net/nf_conntrack", timeout=120).stdout.decode()
        return list(iter_entries(text.splitlines()))

    def listed(self) -> int:
        return self.exec("cat", "/proc/net/nf_conntrack", timeout=120).stdout.count(b"\n")

    def sockets(self, state: str = "established") -> list[str]:
        out = self.exec("ss", "-tanH", "state", state).stdout.decode()
        return [ln for ln in out.splitlines() if ln.strip()]

    def load(self, lines: str) -> None:
        """Load entries over ctnetlink (conntrack -R reads `-o save` lines)."""
        fd, path = tempfile.mkstemp(prefix="ctdlab-", suffix=".ct")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(lines)
            self.exec("conntrack", "-R", path, timeout=300)
        finally:
            os.unlink(path)

    # ---- teardown ---------------------------------------------------------------

    def destroy(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.inp.close()
            with contextlib.suppress(Exception):
                p.terminate()
                p.wait(timeout=3)
            with contextlib.suppress(Exception):
                p.kill()
        destroy_netns(self.name)


def destroy_netns(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def leftovers() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True).stdout.decode()
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX)]


def clean(only: list[str] | None = None) -> list[str]:
    """Delete lab namespaces: every one left behind, or only the ones named."""
    names = leftovers()
    if only is not None:
        names = [n for n in names if n in only]
    for n in names:
        destroy_netns(n)
    return names


# ---- dmesg -------------------------------------------------------------------------


def uptime() -> float:
    """Seconds since boot: the clock of dmesg's stamps."""
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def own_kernel_log(inode: int, since: float) -> list[str]:
    """The ``table full`` kernel log lines of this netns, logged at or after ``since`` (uptime seconds):
    matched by the inode the kernel prints (6.18+) and by time, never by diffing the whole log — on a
    busy host other namespaces fill and log too. On kernels that name no netns, a line without one
    can only be matched by time."""
    r = subprocess.run(["dmesg"], capture_output=True)
    if r.returncode != 0:
        return []
    names_netns = kernel.logs_netns_inode(parse_kernel_release(os.uname().release))
    out = []
    for e in parse_kernel_log(r.stdout.decode(errors="replace"), "dmesg"):
        if e.kind != kernel.TABLE_FULL or e.mono is None or float(e.mono) < since - 0.5:
            continue
        if e.netns_inode is not None and e.netns_inode != inode:
            continue  # another namespace's
        if e.netns_inode is None and names_netns:
            continue  # the initial netns's (6.18+ names every other one)
        out.append(e.line)
    return out


# ---- scenario runs --------------------------------------------------------------------


@dataclass
class LabRun:
    scenario: str
    netns: LabNetns
    built: list[str] = field(default_factory=list)  # what the scenario built, in words
    observed: dict[str, Any] = field(default_factory=dict)  # numbers and lines a user would see
    explanation: str = ""
    cleanups: list[Callable[[], object]] = field(default_factory=list)  # more to remove afterwards (extra namespaces, cgroups, files)

    def say(self, line: str) -> None:
        self.built.append(line)


class _Terminated(BaseException):
    pass


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def run_scenario(name: str, scale: int | None = None, keep: bool = False) -> Iterator[LabRun]:
    from ctdoctor.lab.scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise UsageError(f"no lab scenario {name!r} (see: ctdoctor lab list)")
    sc = SCENARIOS[name]
    missing = missing_requirements()
    if missing:
        raise UsageError("the lab needs " + "; ".join(missing))
    why = sc.unavailable()
    if why:
        raise UsageError(f"scenario {name} cannot run on this kernel: {why}")
    if scale is not None and scale <= 0:
        raise UsageError("--scale must be a positive number")
    if keep and getattr(sc, "keepable", True) is False:
        raise UsageError(f"scenario {name} cannot be kept (it places processes in cgroups it must remove)")
    old = {}
    if threading_main():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _raise_terminated)
    ns = LabNetns(name)
    try:
        ns.create()
        run = LabRun(name, ns)
        run.say(f"netns {ns.name} (inode {ns.inode}), lo up, nft rule 'ct state new accept' on output")
        sc.build(run, scale or sc.default_scale)
        run.explanation = sc.explanation
        yield run
    except _Terminated:
        raise Failure(f"lab {name} terminated; netns {ns.name} removed") from None
    finally:
        if not keep:
            for undo in reversed(getattr(run, "cleanups", []) if "run" in locals() else []):
                with contextlib.suppress(Exception):
                    undo()
            ns.destroy()
        for sig, h in old.items():
            signal.signal(sig, h)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


__all__ = ["PREFIX", "LabNetns", "LabRun", "clean", "leftovers", "missing_requirements", "run_scenario"]
