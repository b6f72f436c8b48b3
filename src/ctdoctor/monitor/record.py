"""``record``: watch every netns cheaply and capture the evidence when one fills up.

By morning a table that was full at 3 a.m. has drained; the listing, the rates and
the log are gone. The recorder samples each netns's count and stats every
``--interval`` seconds through the exporter's held-open files (microseconds per
netns), and when a netns crosses ``--threshold`` or its ``drop``/``insert_failed``
counters rise it captures an incident: a host image in the ``collect`` layout
(readable by every command with ``--root``) with that netns's listing, two stats
samples, the settings, the kernel log, the new-flow rates by source, destination
and port over a few seconds, and ``ctdoctor/incident.json``.

The capture runs in a child process (``python -m ctdoctor.monitor.record capture``): the
sampler keeps going, memory stays flat, and on SIGTERM the child is stopped and
removes its temporary files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from ctdoctor import __version__, cleanup
from ctdoctor.bundle.collect import collect
from ctdoctor.errors import CtdError, Failure, InputError
from ctdoctor.listing.query import parse_query
from ctdoctor.listing.rows import rows
from ctdoctor.model.pods import Pod
from ctdoctor.monitor import rate
from ctdoctor.sources import children, files
from ctdoctor.sources import netns as nsmod
from ctdoctor.sources import pods as podmod
from ctdoctor.sources.hostroot import HostRoot
from ctdoctor.sources.incident import HISTORY_FORMAT, HISTORY_NAME, INCIDENT, LOCK_NAME
from ctdoctor.sources.listing_files import tally_stream_multi
from ctdoctor.sources.live import NetnsReader, parse_wanted
from ctdoctor.write import files as outfiles

NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)-(.+)\.tar\.gz$")
LISTING_LIMIT = 256 << 20  # bytes of listing kept in a bundle (~1.6 M entries); more becomes a sample
RATE_SECONDS = 3.0
HISTORY = 30  # samples of each netns kept for the incident's timeline


def log(msg: str) -> None:
    print(f"ctdoctor-record: {msg}", flush=True)


def safe_name(netns: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", netns)[:64] or "netns"


@dataclass
class NetnsWatch:
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    last_capture: float = 0.0


@dataclass
class Trigger:
    netns: str
    kind: str  # fill | drop | insert_failed
    detail: str
    fill: float | None


HISTORY_EVERY = 1.0  # seconds between writes of DIR/history.json (at most)


class Recorder:
    def __init__(self, directory: str, threshold: float, interval: float, keep: int, max_size: int,
                 cooldown: float, wanted: list[str] | None = None, rate_seconds: float = RATE_SECONDS,
                 listing_limit: int = LISTING_LIMIT):
        self.dir = directory
        self.threshold, self.interval, self.keep, self.max_size = threshold, interval, keep, max_size
        self.cooldown, self.rate_seconds, self.listing_limit = cooldown, rate_seconds, listing_limit
        self.reader = NetnsReader(wanted)
        self.watch: dict[str, NetnsWatch] = {}
        self.child: children.Child | None = None
        self.child_out: IO[bytes] | None = None
        self.child_trigger: Trigger | None = None
        self.queue: deque[Trigger] = deque()
        self.captured = 0
        self._lock_fd: int | None = None
        self._history_at = 0.0
        self._history_failed = False

    # ---- sampling and triggers ------------------------------------------------------------------------

    def sample(self) -> list[Trigger]:
        now = time.time()
        self.reader.rediscover_soon(5.0)
        samples, limit, _ = self.reader.sample()
        out = []
        seen = set()
        for s in samples:
            if not s.readable or s.count is None:
                continue
            seen.add(s.netns)
            w = self.watch.setdefault(s.netns, NetnsWatch())
            prev = w.history[-1] if w.history else None
            stats = s.stats or {}
            w.history.append({"t": round(now, 3), "count": s.count, "max": limit,
                              "drop": stats.get("drop"), "insert_failed": stats.get("insert_failed"),
                              "early_drop": stats.get("early_drop")})
            fill = s.count / limit if limit else None
            trig = None
            if fill is not None and fill >= self.threshold:
                trig = Trigger(s.netns, "fill", f"{s.count}/{limit} ({fill:.1%}) >= threshold {self.threshold:.0%}",
                               fill)
            elif prev is not None:
                for k in ("drop", "insert_failed"):
                    a, b = prev.get(k), stats.get(k)
                    if a is not None and b is not None and b > a:
                        trig = Trigger(s.netns, k, f"{k} +{b - a} in {now - prev['t']:.1f}s", fill)
                        break
            if trig and now - w.last_capture >= self.cooldown and not self._pending(s.netns):
                w.last_capture = now
                out.append(trig)
        for gone in set(self.watch) - seen:
            del self.watch[gone]
        if now - self._history_at >= HISTORY_EVERY:
            self.write_history(now)
        return out

    def write_history(self, now: float) -> None:
        """``DIR/history.json``: the samples kept of every netns, ``{"netns": {name: [[time, count, max],
        ...]}}``, replaced atomically (``status --watch`` starts its trend from it while this recorder
        holds the folder's lock). A failure is logged once; the recorder goes on."""
        self._history_at = now
        doc = {"format": HISTORY_FORMAT, "version": 1, "written": round(now, 3), "interval": self.interval,
               "netns": {name: [[h["t"], h["count"], h["max"]] for h in w.history]
                         for name, w in sorted(self.watch.items())}}
        try:
            outfiles.replace_in(self.dir, HISTORY_NAME, json.dumps(doc, separators=(",", ":")).encode(), 0o600)
            self._history_failed = False
        except Failure as e:
            if not self._history_failed:
                log(f"the history for status --watch is not kept: {e}")
            self._history_failed = True

    def _pending(self, netns: str) -> bool:
        return any(t.netns == netns for t in self.queue) or (
            self.child_trigger is not None and self.child_trigger.netns == netns)

    # ---- captures -----------------------------------------------------------------------------------------

    def start_capture(self, trig: Trigger) -> None:
        why = self.disk_problem()
        if why:
            log(f"incident in netns {trig.netns} ({trig.detail}) not captured: {why}")
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        pod = pod_of(trig.netns)
        name = safe_name(trig.netns) + (f"-{safe_name(pod.namespace + '_' + pod.name)}" if pod else "")
        out = os.path.join(self.dir, f"{stamp}-{name}.tar.gz")
        spec = {"output": out, "netns": trig.netns, "trigger": trig.kind, "detail": trig.detail,
                "pod": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid} if pod else None,
                "fill": trig.fill, "threshold": self.threshold, "at": time.time(),
                "history": list(self.watch.get(trig.netns, NetnsWatch()).history),
                "rate_seconds": self.rate_seconds, "listing_limit": self.listing_limit}
        log(f"incident in netns {trig.netns}: {trig.detail}; capturing {out}")
        # spec in, result out through files: nothing can block on a full pipe
        spec_f = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the child, closed below
        self.child_out = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed in poll_capture
        spec_f.write(json.dumps(spec).encode())
        spec_f.seek(0)
        self.child = children.spawn([sys.executable, "-m", "ctdoctor.monitor.record", "capture"], stdin=spec_f,
                                    stdout=self.child_out, stderr=children.STDOUT)
        spec_f.close()
        self.child_trigger = trig

    def poll_capture(self) -> None:
        if self.child is None:
            if self.queue:
                self.start_capture(self.queue.popleft())
            return
        if self.child.poll() is None:
            return
        assert self.child_out is not None
        self.child_out.seek(0)
        text = self.child_out.read(1 << 16).decode("utf-8", "replace").strip()
        self.child_out.close()
        if self.child.returncode == 0:
            self.captured += 1
            log(f"captured {text.splitlines()[-1] if text else '?'}")
            self.prune()
        else:
            msg = (text.splitlines() or [f"exit {self.child.returncode}"])[-1]
            log(f"capture of netns {self.child_trigger.netns if self.child_trigger else '?'} failed: {msg}")
        self.child = None
        self.child_trigger = None

    def stop_capture(self, grace: float = 0.8) -> None:
        if self.child is None or self.child.poll() is not None:
            self.remove_temps()
            return
        children.end(self.child, grace, terminate=True)  # its SIGTERM handler removes its temporary files
        self.remove_temps()

    def remove_temps(self) -> None:
        """Remove the half-written bundles and spooled listings of captures that did not finish (a
        killed capture leaves them; only the recorder holding the lock writes here)."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for p in names:
            if p.startswith((".ctdoctor-bundle-", ".ctdoctor-listing-")) and p.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.dir, p))
                except OSError:
                    pass

    # ---- one recorder per directory -------------------------------------------------------------------

    def lock(self) -> None:
        """Take the directory's lock (held until the process ends); a second recorder on the same
        directory stops with a one-line error instead of breaking the first one's captures."""
        self._lock_fd = outfiles.lock_dir(self.dir, LOCK_NAME, "ctdoctor record")
        self.remove_temps()  # whatever a recorder killed earlier left behind

    # ---- the disk ---------------------------------------------------------------------------------------

    def disk_problem(self) -> str | None:
        """Why a capture now could fill the disk, else None."""
        try:
            st = os.statvfs(self.dir)
        except OSError as e:
            return f"{self.dir}: {e.strerror}"
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize
        have = bundles(self.dir)
        last = have[-1][1] if have else 0
        if free < max(total * 0.05, 2 * last, 64 << 20):
            return f"only {free >> 20} MiB free on the file system of {self.dir} (kept above 5% and 64 MiB)"
        if self.max_size and last and sum(s for _, s in have) + last > self.max_size and len(have) <= 1:
            return f"--max-size {self.max_size >> 20} MiB is smaller than one bundle"
        return None

    def prune(self) -> list[str]:
        """Remove the oldest bundles past --keep and --max-size."""
        have = bundles(self.dir)
        removed = []
        while have and (len(have) > self.keep or (self.max_size and sum(s for _, s in have) > self.max_size)):
            if len(have) == 1:  # never remove the incident just captured
                break
            name, _ = have.pop(0)
            try:
                os.unlink(os.path.join(self.dir, name))
                removed.append(name)
            except OSError:
                pass
        for r in removed:
            log(f"removed {r} (--keep {self.keep}, --max-size {self.max_size >> 20} MiB)")
        return removed

    # ---- the loop -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until ``stop.is_set()``: sample, trigger, capture one incident at a time."""
        if self._lock_fd is None:
            self.lock()
        log(f"watching every {self.interval:g}s; threshold {self.threshold:.0%}; incidents in {self.dir}")
        try:
            while not stop.is_set():
                for trig in self.sample():
                    self.queue.append(trig)
                self.poll_capture()
                stop.wait(self.interval)
        finally:
            self.stop_capture()
            self.reader.close()


def bundles(directory: str) -> list[tuple[str, int]]:
    """(name, size) of the incident bundles in a folder, oldest first: regular files only (a symlink,
    a FIFO or a folder named like a bundle is never read, pruned or counted)."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise InputError(f"--dir {directory}: {e.strerror}") from None
    for n in names:
        if NAME_RE.match(n):
            try:
                st = os.lstat(os.path.join(directory, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((n, st.st_size))
    return sorted(out)


def not_bundles(directory: str) -> list[tuple[str, str]]:
    """(name, what it is) of the entries named like a bundle that are not regular files."""
    out: list[tuple[str, str]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for n in names:
        if not NAME_RE.match(n):
            continue
        try:
            mode = os.lstat(os.path.join(directory, n)).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            what = ("a symlink" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                    "a folder" if stat.S_ISDIR(mode) else "a device or socket")
            out.append((n, what))
    return sorted(out)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 2G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


# ---- the capture (child process) ----------------------------------------------------------------------


def pod_of(netns: str) -> Pod | None:
    """The pod that holds this live netns (sources.pods.Pod), or None: incidents are named by it."""
    try:
        refs = nsmod.select(nsmod.discover(), netns)
    except CtdError:  # gone already: the incident keeps its netns name
        return None
    live = HostRoot.live()
    return podmod.for_refs(refs, live, live).get(refs[0].inode) if refs else None


def capture(spec: dict[str, Any]) -> str:
    netns = spec["netns"]
    refs = nsmod.select(nsmod.discover(), netns)
    incident = {
        "format": "ctdoctor-incident", "format_version": 1, "ctdoctor": __version__,
        "netns": netns, "pod": spec.get("pod"), "trigger": spec["trigger"], "detail": spec["detail"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(spec["at"])), "at": spec["at"],
        "fill": spec["fill"], "threshold": spec["threshold"], "samples": spec["history"],
    }
    # new flows first: they tell who is making entries right now, before anything else takes time
    incident["rates"], incident["rates_note"] = _rates(refs[0], spec["rate_seconds"])
    tops: dict[str, Any] = {}

    def on_listing(ref: nsmod.NetnsRef, path: str) -> None:
        if ref.name == netns:
            tops.update(_listing_tops(path))

    def incident_json() -> bytes:  # asked for when the tar is written: after the listing was read
        incident["top"] = tops.get("top", {})
        incident["listed"] = tops.get("listed")
        peaks = [h["count"] / h["max"] for h in spec["history"] if h.get("max")]
        incident["peak_fill"] = round(max([*peaks, spec["fill"] or 0]), 4)
        return json.dumps(incident, indent=2).encode()

    collect(spec["output"], only={netns}, entries_for={netns}, on_listing=on_listing,
            listing_limit=spec["listing_limit"], extra={INCIDENT: incident_json})
    return str(spec["output"])


def _rates(ref: nsmod.NetnsRef, seconds: float) -> tuple[dict[str, Any], str]:
    queries = {k: parse_query(k, None, None, None, None, None) for k in ("src", "dst", "dport")}
    counters = []
    try:
        for q in queries.values():
            counters += rate.open_counters([ref], q)
    except Failure as e:
        for c in counters:
            c.close()
        return {}, str(e)
    try:
        wins = rate.windows(counters, seconds)
    finally:
        for c in counters:
            c.close()
    out = {}
    lost = False
    for (k, q), w in zip(queries.items(), wins, strict=True):
        doc = rate.build_doc(q, [[w]], 10, int(w.lost), 1)
        out[k] = [{"key": r["key"][k], "rate": r["rate"], "count": r["count"]} for r in doc["rows"]]
        out["new_per_second"] = doc["new_per_second"]
        lost = lost or w.lost
    return out, ("events were lost (ENOBUFS): rates are a lower bound" if lost else "")


def _listing_tops(path: str) -> dict[str, Any]:
    keys = ("src", "dst", "dport", "state")
    qs = [parse_query(k, None, None, None, None, None) for k in keys]
    with files.open_read(path) as f:
        ts = tally_stream_multi(f, qs)
    top = {}
    for k, q, t in zip(keys, qs, ts, strict=True):
        _, rs = rows(t, q, 10)
        top[k] = [{"key": r["key"][k], "count": r["count"], "share": r["share"]} for r in rs]
    return {"top": top, "listed": ts[0].total}


def run(directory: str, threshold: float, interval: float, keep: int, max_size: int, cooldown: float, *,
        netns: str | None, rate_seconds: float) -> None:
    """``ctdoctor record``: watch until SIGTERM, SIGINT or SIGHUP, capturing incidents into ``directory``."""
    outfiles.make_private_dir(directory)
    rec = Recorder(directory, threshold, interval, keep, max_size, cooldown,
                   wanted=parse_wanted(netns or "all"), rate_seconds=rate_seconds)
    rec.lock()  # before the signal handlers: a second recorder on this directory stops here, in one line
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    rec.run(stop)
    log(f"stopped; {rec.captured} incident(s) captured")


def main(argv: list[str]) -> int:
    if argv[:1] != ["capture"]:
        print("usage: python -m ctdoctor.monitor.record capture < SPEC.json", file=sys.stderr)
        return 2
    cleanup.install_signal_handlers()
    spec = json.loads(sys.stdin.read())
    try:
        print(capture(spec))
    except CtdError as e:
        print(f"ctdoctor record: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["Recorder", "bundles", "parse_size"]
