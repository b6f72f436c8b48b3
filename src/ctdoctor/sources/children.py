"""The processes ctdoctor starts for itself (the exporter's refresh worker, ``record``'s capture,
the helper tools ``recover`` runs) and what this process knows of its own memory."""

from __future__ import annotations

import subprocess
from typing import IO

Child = subprocess.Popen[bytes]
Done = subprocess.CompletedProcess[str]
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


def spawn(argv: list[str], *, stdin: int | IO[bytes], stdout: int | IO[bytes], stderr: int | IO[bytes]) -> Child:
    """Start a child (OSError when it cannot be started)."""
    return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)


def wait(child: Child, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds; True when it has ended."""
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def end(child: Child, grace: float, *, terminate: bool = False) -> None:
    """Let a child end within ``grace`` seconds (after SIGTERM when ``terminate``), else kill it."""
    try:
        if terminate:
            child.terminate()
        if wait(child, grace):
            return
    except OSError:
        pass
    child.kill()
    child.wait()


def run(argv: list[str], timeout: float) -> Done:
    """A helper command run to its end, its output captured as text. FileNotFoundError when the tool is
    missing, TimeoutError when it does not finish in time, OSError when it cannot be run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{' '.join(argv[:4])} did not finish within {timeout:g} s") from None


def run_quiet(argv: list[str]) -> None:
    """A helper command whose result does not matter (a cleanup)."""
    try:
        subprocess.run(argv, capture_output=True, check=False)
    except OSError:
        pass


def failed(argv: list[str], why: str) -> Done:
    """A result that says the command failed, for a command that said yes and did nothing."""
    return subprocess.CompletedProcess(argv, 1, "", why)


def own_memory_mb() -> tuple[float, float]:
    """(resident now, resident at its highest) of this process, in MB."""
    now = peak = 0.0
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith(("VmRSS:", "VmHWM:")):
                    mb = round(int(ln.split()[1]) / 1024, 1)
                    if ln.startswith("VmRSS:"):
                        now = mb
                    else:
                        peak = mb
    except (OSError, ValueError, IndexError):
        pass
    return now, peak


def run_input(argv: list[str], text: str | None) -> Done:
    """A command run to its end with ``text`` on its stdin, its output captured as text."""
    return subprocess.run(argv, input=text, capture_output=True, text=True)
