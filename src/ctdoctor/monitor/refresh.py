"""The exporter's background refresh, as the exporter sees it: the ``Worker`` process it keeps.

The refresh itself (the doctor's findings and each netns's state mix) runs in its own
process, ``python -m ctdoctor.monitor.refresh_worker --serve`` (a line in, a JSON line
out), kept between refreshes so the interpreter and imports are paid once and replaced
when it grows: the scrapes served meanwhile never wait for it, the exporter's memory
stays flat over days, and the exporter itself never imports the doctor.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
import time

from ctdoctor.monitor.metrics import Refreshed
from ctdoctor.sources import children


class Worker:
    """The refresh process, kept between refreshes: started once (interpreter and imports paid once),
    asked for a refresh with a line on its stdin, it answers one line of JSON on its stdout. It is
    replaced when it does not answer in time, dies, or has grown (``RECYCLE_RSS_MB``; every
    ``RECYCLE_AFTER`` refreshes in any case), so whatever a refresh allocated goes back to the system
    and the exporter's memory stays flat over days. A failure is reported in the result, never raised."""

    RECYCLE_RSS_MB = 64.0
    RECYCLE_AFTER = 100

    def __init__(self, wanted: str, timeout: float, argv: list[str] | None = None):
        self.wanted, self.timeout = wanted, timeout
        self.argv = argv or [sys.executable, "-m", "ctdoctor.monitor.refresh_worker", "--serve"]
        self.proc: children.Child | None = None
        self.served = 0
        self.cpu_seconds = 0.0  # CPU the refreshes used, summed (the worker's own count)
        self._lock = threading.Lock()

    def _start(self) -> children.Child:
        # its stderr is dropped: every error it can name comes back in its JSON answer
        p = children.spawn(self.argv, stdin=children.PIPE, stdout=children.PIPE, stderr=children.DEVNULL)
        self.proc, self.served = p, 0
        return p

    def stop(self) -> None:
        """End the worker (it exits when its stdin closes; killed if it does not at once)."""
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            try:
                if p.stdin:
                    p.stdin.close()
                grace = 2.0
            except OSError:
                grace = 0.0
            children.end(p, grace)
        finally:
            if p.stdout:
                p.stdout.close()

    def refresh(self, kernel_log: str | None = None) -> Refreshed:
        """One refresh; ``kernel_log``: the conntrack lines of the kernel log as dmesg prints them (the
        exporter's /dev/kmsg follower keeps them), so the worker runs no dmesg; None: it reads dmesg."""
        with self._lock:
            return self._refresh(kernel_log)

    def _refresh(self, kernel_log: str | None) -> Refreshed:
        t0 = time.time()
        try:
            p = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(json.dumps({"wanted": self.wanted, "kernel_log": kernel_log}).encode() + b"\n")
            p.stdin.flush()
            line = _read_line(p.stdout.fileno(), time.monotonic() + self.timeout)
        except TimeoutError:
            self.stop()
            return Refreshed(duration=time.time() - t0, error=f"the refresh took longer than {self.timeout:g} s")
        except OSError as e:
            self.stop()
            return Refreshed(duration=time.time() - t0, error=f"could not run the refresh: {e.strerror or e}")
        took = time.time() - t0
        if not line:
            code = p.wait()
            self.proc = None
            how = f"signal {-code}" if code < 0 else f"exit {code}"
            return Refreshed(duration=took, error=f"the refresh process ended ({how})")
        self.served += 1
        r = parse_answer(line, took)
        self.cpu_seconds += r.cpu_seconds
        if r.rss_mb > self.RECYCLE_RSS_MB or self.served >= self.RECYCLE_AFTER:
            self.stop()
        return r


def _read_line(fd: int, deadline: float) -> bytes:
    """One line from fd by the deadline (b"" at end of file); TimeoutError when it does not come."""
    poller = select.poll()  # not select(): the exporter holds thousands of fds (two per netns)
    poller.register(fd, select.POLLIN)
    got = bytearray()
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return bytes(got) if got.endswith(b"\n") else b""
        got += chunk
    return bytes(got)


def parse_answer(line: bytes, took: float) -> Refreshed:
    """The worker's JSON answer (or one-shot output) as a Refreshed."""
    try:
        doc = json.loads(line)
        cpu, rss = float(doc.get("cpu_seconds", 0.0)), float(doc.get("rss_mb", 0.0))
        peak = float(doc.get("peak_rss_mb", rss))
        if doc.get("error"):
            return Refreshed(duration=took, error=str(doc["error"])[:300], cpu_seconds=cpu, rss_mb=rss,
                             peak_rss_mb=peak)
        return Refreshed(at=time.time(), duration=took, ok=True,
                         by_state={k: [(str(a), str(b), int(c)) for a, b, c in v] for k, v in doc["by_state"].items()},
                         listing_error={str(k): str(v) for k, v in doc["listing_error"].items()},
                         findings=[(str(a), str(b), str(c)) for a, b, c in doc["findings"]],
                         cpu_seconds=cpu, rss_mb=rss, peak_rss_mb=peak)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return Refreshed(duration=took, error=f"unreadable refresh output: {e}")
