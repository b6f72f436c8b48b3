"""``ctdoctor exporter``: /metrics over HTTP, or a textfile for node_exporter.

Three loops, none of which a scrape waits for:
- discovery (every few seconds): namespaces that appeared get their files opened,
  the files of the ones gone are closed;
- the refresh (``--refresh``, default 30 s): the doctor and the per-state tally, in a
  child process (``export.refresh``);
- the kernel log follower (``/dev/kmsg``).
A scrape reads the held count and stat files and renders: microseconds per netns.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from ctdoctor.errors import Failure, UsageError
from ctdoctor.export.live import KernelLogFollower, NetnsReader
from ctdoctor.export.metrics import Exposition, Refreshed, render, render_text

if TYPE_CHECKING:
    from ctdoctor.export.refresh import Worker

DEFAULT_PORT = 9718
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DISCOVER_EVERY = 5.0
TEXTFILE_NAME = "ctdoctor.prom"

INDEX = b"""<html><head><title>ctdoctor exporter</title></head><body>
<h1>ctdoctor exporter</h1>
<p>nf_conntrack of every network namespace: <a href="/metrics">/metrics</a>.</p>
<p>Alert rules and a dashboard: contrib/ in the ctdoctor source; metric names: DESIGN.md section 7.</p>
</body></html>
"""


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT``, ``:PORT`` (all addresses) or ``PORT``; one-line error otherwise."""
    import ipaddress

    host, port = "", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise UsageError(f"--listen {text}: use [ADDRESS]:PORT for IPv6")
        host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text}: the port must be 1..65535")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise UsageError(f"--listen {text}: {host!r} is not an IP address") from None
    return host, int(port)


class Exporter:
    def __init__(self, wanted: list[str] | None, refresh_every: float, names_init: bool,
                 refresh_timeout: float | None = None, discover_every: float = DISCOVER_EVERY):
        self.wanted = wanted
        self.refresh_every = refresh_every
        self.discover_every = discover_every
        self.refresh_timeout = refresh_timeout or max(120.0, 4 * refresh_every)
        self.reader = NetnsReader(wanted)
        self.detail = "busy"  # --detail
        self.follower = KernelLogFollower(self.reader, names_init)
        self.refreshed = Refreshed()
        self.refreshes = self.failures = 0
        self.refresh_cpu = 0.0  # seconds of CPU the refreshes used, summed
        self.worker: Worker | None = None  # the refresh process, started by the first refresh
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def refresh_target(self) -> str:
        return self.wanted[0] if self.wanted and len(self.wanted) == 1 else "all"

    def refresh_now(self) -> Refreshed:
        from ctdoctor.export.refresh import Worker

        if self.worker is None:
            self.worker = Worker(self.refresh_target, self.refresh_timeout)
        r = self.worker.refresh()
        self.refreshes += 1
        self.refresh_cpu += r.cpu_seconds
        if r.ok:
            self.refreshed = r
        else:
            self.failures += 1
            # keep the last good data (its timestamp says how old it is) but say the refresh failed
            old = self.refreshed
            self.refreshed = dataclasses.replace(old, duration=r.duration, ok=False, error=r.error)
            if r.error != old.error:  # once per new reason, not every --refresh seconds
                print(f"ctdoctor exporter: refresh failed: {r.error}", file=sys.stderr, flush=True)
        return self.refreshed

    def exposition(self) -> Exposition:
        samples, limit, buckets = self.reader.sample()
        if limit:
            self.follower.set_full_now([s.netns for s in samples if s.count is not None and s.count >= limit])
        return Exposition(samples, limit, buckets, self.refreshed, self.follower.by_name(),
                          self.follower.readable, refreshes=self.refreshes, refresh_failures=self.failures,
                          refresh_cpu_seconds=self.refresh_cpu,
                          detail=self.detail)

    def _loop(self, every: float, fn, name: str) -> None:
        def run():
            while not self._stop.wait(every):
                try:
                    fn()
                except Exception as e:
                    print(f"ctdoctor exporter: {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def start(self, background: bool = True) -> None:
        self.reader.rediscover()
        self.warn_unreadable()
        self.follower.start()
        if self.follower.readable is False:
            print(f"ctdoctor exporter: kernel log not followed: {self.follower.error}", file=sys.stderr, flush=True)
        if background:
            self._loop(self.discover_every, self.reader.rediscover, "discovery")
            first = threading.Thread(target=self.refresh_now, name="first-refresh", daemon=True)
            first.start()
            self._loop(self.refresh_every, self.refresh_now, "refresh")

    def warn_unreadable(self) -> None:
        samples, _limit, _ = self.reader.sample()
        blind = [s for s in samples if not s.readable]
        if blind:
            hint = "; run as root for all of them" if os.geteuid() != 0 else ""
            print(f"ctdoctor exporter: cannot read {len(blind)} netns ({', '.join(s.netns for s in blind[:5])}): "
                  f"{blind[0].error}{hint}", file=sys.stderr, flush=True)
        if os.geteuid() != 0:
            print("ctdoctor exporter: not root: other users' and containers' namespaces are not found, and the "
                  "per-state breakdown and findings need CAP_NET_ADMIN", file=sys.stderr, flush=True)
        if self.wanted:
            found = set(self.reader.names()) | {str(s.inode) for s in samples}
            missing = [w for w in self.wanted if w not in found]
            if missing:
                print(f"ctdoctor exporter: netns {', '.join(missing)} not found now; exported once it exists",
                      file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self.follower.stop()
        for t in self._threads:
            t.join(1)
        if self.worker is not None:
            self.worker.stop()
        self.reader.close()


# ---- HTTP ------------------------------------------------------------------------------------------


def make_server(exporter: Exporter, host: str, port: int):
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "ctdoctor-exporter"
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, ctype = render(exporter.exposition(), self.headers.get("Accept", ""))
                except Exception as e:
                    self._send(500, f"ctdoctor exporter: {type(e).__name__}: {e}\n".encode(), "text/plain")
                    return
                self._send(200, body, ctype)
            elif path == "/":
                self._send(200, INDEX, "text/html; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics\n", "text/plain")

        do_HEAD = do_GET

        def log_message(self, *args):  # scrapes are not logged
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 1024  # hundreds of scrapers connecting at once are queued, not refused

    if host and ":" in host:
        Server.address_family = socket.AF_INET6
    try:
        return Server((host or "", port), Handler)
    except OSError as e:
        raise Failure(f"cannot listen on {host or '*'}:{port}: {e.strerror}") from None


def serve(exporter: Exporter, host: str, port: int, ready=None) -> None:
    srv = make_server(exporter, host, port)
    exporter.start()
    shown = f"[{host}]" if ":" in host else (host or "*")
    print(f"ctdoctor exporter: serving http://{shown}:{srv.server_address[1]}/metrics "
          f"(refresh every {exporter.refresh_every:g} s)", file=sys.stderr, flush=True)
    if ready:
        ready(srv)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        srv.server_close()
        exporter.stop()


# ---- textfile -------------------------------------------------------------------------------------


def write_textfile(directory: str, body: bytes) -> str:
    """Write DIR/ctdoctor.prom atomically: a temp file node_exporter ignores (not *.prom), then rename."""
    target = os.path.join(directory, TEXTFILE_NAME)
    tmp = os.path.join(directory, f".{TEXTFILE_NAME}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise Failure(f"cannot write {target}: {e.strerror}") from None
    return target


def textfile(exporter: Exporter, directory: str, once: bool) -> None:
    if not os.path.isdir(directory):
        raise UsageError(f"--textfile {directory}: not a directory")
    if not os.access(directory, os.W_OK):
        raise Failure(f"--textfile {directory}: not writable")
    if once:
        exporter.reader.rediscover()
        exporter.follower.read_once()
        exporter.refresh_now()
        write_textfile(directory, render_text(exporter.exposition()))
        if exporter.worker is not None:
            exporter.worker.stop()
        exporter.reader.close()
        return
    exporter.start(background=False)
    try:
        while True:
            started = time.monotonic()
            exporter.reader.rediscover()
            exporter.refresh_now()
            write_textfile(directory, render_text(exporter.exposition()))
            time.sleep(max(0.0, exporter.refresh_every - (time.monotonic() - started)))
    finally:
        exporter.stop()
