"""``ctdoctor exporter``: /metrics over HTTP, or a textfile for node_exporter.

Three loops, none of which a scrape waits for:
- discovery (every few seconds): namespaces that appeared get their files opened,
  the files of the ones gone are closed;
- the refresh (``--refresh``, default 30 s): the doctor and the per-state tally, in a
  child process (``monitor.refresh_worker``);
- the kernel log follower (``/dev/kmsg``).
A scrape reads the held count and stat files and renders: microseconds per netns.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client.exposition import choose_encoder

from ctdoctor.errors import Failure, UsageError
from ctdoctor.model import kernel
from ctdoctor.monitor.http import BoundedServer, Limits, Request, Response
from ctdoctor.monitor.metrics import Exposition, Refreshed, ServerStats, render, render_text
from ctdoctor.monitor.refresh import Worker
from ctdoctor.sources import live
from ctdoctor.sources.live import KernelLogFollower, NetnsReader
from ctdoctor.write import files

DEFAULT_PORT = 9718
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DISCOVER_EVERY = 5.0
TEXTFILE_NAME = "ctdoctor.prom"

INDEX = b"""<html><head><title>ctdoctor exporter</title></head><body>
<h1>ctdoctor exporter</h1>
<p>nf_conntrack of every network namespace: <a href="/metrics">/metrics</a>.</p>
<p>Alert rules and a dashboard: contrib/ in the ctdoctor source; metric names: the README's exporter section.</p>
</body></html>
"""


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT``, ``:PORT`` (all addresses) or ``PORT``; one-line error otherwise."""
    host, port = "", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise UsageError(f"--web.listen-address {text}: use [ADDRESS]:PORT for IPv6")
        host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--web.listen-address {text}: the port must be 1..65535")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise UsageError(f"--web.listen-address {text}: {host!r} is not an IP address") from None
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
        self.compat = ""  # --compat node
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
        if self.worker is None:
            self.worker = Worker(self.refresh_target, self.refresh_timeout)
        r = self.worker.refresh(self.follower.dmesg_text())
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
                          detail=self.detail, compat=self.compat,
                          domainname=live.domainname() if self.compat == "node" else "(none)")

    def _loop(self, every: float, fn: Callable[[], object], name: str) -> None:
        def run() -> None:
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


class MetricsApp:
    """What the bounded server (``monitor.http``) answers: ``/metrics`` and an index page.

    Scrapes that arrive while an answer is being built share the next one instead of each
    building its own (the answer is never older than the request), so 200 scrapers at once cost
    a few renders, not 200."""

    def __init__(self, exporter: Exporter, telemetry_path: str = "/metrics"):
        self.exporter, self.telemetry_path = exporter, telemetry_path
        self.stats = ServerStats()
        self.server: BoundedServer | None = None  # for its numbers
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, bytes]] = {}  # content type -> (when its build started, body)

    def __call__(self, req: Request) -> Response:
        if req.path == self.telemetry_path:
            return self.metrics(req)
        if req.path == "/":
            page = INDEX.replace(b'href="/metrics">/metrics', f'href="{self.telemetry_path}">{self.telemetry_path}'
                                 .encode())
            return Response(200, page, "text/html; charset=utf-8")
        return Response(404, f"not found: try {self.telemetry_path}\n".encode())

    def metrics(self, req: Request) -> Response:
        accept = req.headers.get("accept", "")
        _, ctype = choose_encoder(accept)
        with self._lock:
            hit = self._last.get(ctype)
            if hit is not None and hit[0] >= req.arrived:
                return Response(200, hit[1], ctype, gzip_ok=True)
            started = time.monotonic()
            try:
                x = self.exporter.exposition()
                x.server = self._server_stats()
                body, ctype = render(x, accept)
            except Exception as e:
                self.stats.scrape_errors += 1
                return Response(500, f"ctdoctor exporter: {type(e).__name__}: {e}\n".encode())
            self.stats.last_scrape_seconds = time.monotonic() - started
            self._last[ctype] = (started, body)
        return Response(200, body, ctype, gzip_ok=True)

    def _server_stats(self) -> ServerStats:
        sv = self.server
        if sv is not None:
            st = sv.stats
            self.stats.rejected = {"busy": st["rejected_busy"], "timeout": st["timeouts"], "evicted": st["evicted"],
                                   "unauthorized": st["unauthorized"], "rate_limited": st["rate_limited"]}
            self.stats.connections = len(sv._conns)
        return self.stats


def exposed_beyond_loopback(addresses: list[tuple[str, int]]) -> bool:
    for host, _port in addresses:
        if not host:
            return True
        if host == "localhost":
            continue
        if not ipaddress.ip_address(host).is_loopback:
            return True
    return False


def serve(exporter: Exporter, addresses: list[tuple[str, int]], *, web_config: str | None = None,
          telemetry_path: str = "/metrics", max_requests: int = 256,
          ready: Callable[[BoundedServer], object] | None = None, limits: Limits | None = None) -> None:
    app = MetricsApp(exporter, telemetry_path)
    lim = limits or Limits(max_requests=max_requests)
    srv = BoundedServer(addresses, app, lim, web_config)
    app.server = srv
    web = srv.web.cfg
    guarded = bool(web.users) or bool(web.tls and web.tls.client_auth_type == "RequireAndVerifyClientCert")
    if exposed_beyond_loopback(addresses) and not guarded:
        print("ctdoctor exporter: warning: listening beyond loopback without authentication: anyone who can "
              "reach the port reads every netns's metrics (set basic_auth_users or client certificates in "
              "--web.config.file)", file=sys.stderr, flush=True)
    exporter.start()
    scheme = "https" if web.tls else "http"
    shown = ", ".join(f"{scheme}://{f'[{h}]' if ':' in h else h}:{p}{telemetry_path}" for h, p in srv.addresses)
    print(f"ctdoctor exporter: serving {shown} (refresh every {exporter.refresh_every:g} s)",
          file=sys.stderr, flush=True)
    if ready:
        ready(srv)
    try:
        srv.serve_forever()
    finally:
        exporter.stop()


# ---- textfile -------------------------------------------------------------------------------------


def write_textfile(directory: str, body: bytes) -> str:
    """Write DIR/ctdoctor.prom atomically: a temp file node_exporter ignores (not *.prom), then rename."""
    return files.replace_in(directory, TEXTFILE_NAME, body, 0o644)


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
    failing = ""  # the last write error, said once; node_exporter keeps serving the file it has meanwhile
    try:
        while True:
            started = time.monotonic()
            exporter.reader.rediscover()
            exporter.refresh_now()
            try:
                write_textfile(directory, render_text(exporter.exposition()))
            except Failure as e:
                if str(e) != failing:
                    print(f"ctdoctor exporter: {e}; the previous file stays, trying again every "
                          f"{exporter.refresh_every:g} s", file=sys.stderr, flush=True)
                failing = str(e)
            else:
                if failing:
                    print(f"ctdoctor exporter: {os.path.join(directory, TEXTFILE_NAME)} written again",
                          file=sys.stderr, flush=True)
                failing = ""
            time.sleep(max(0.0, exporter.refresh_every - (time.monotonic() - started)))
    finally:
        exporter.stop()


# ---- the service ``ctdoctor exporter`` runs --------------------------------------------------------


def run(*, netns: str | None, refresh: float, discover: float, host_root: str | None, detail: str, compat: str,
        listen: list[str] | None, web_config: str | None, telemetry_path: str, max_requests: int,
        textfile_dir: str | None, once: bool) -> None:
    """Serve /metrics (or write the textfile) for the selected namespaces until stopped."""
    addresses = [parse_listen(a) for a in (listen or [DEFAULT_LISTEN])]
    wanted = live.parse_wanted(netns or "all")
    names_init = kernel.logs_netns_inode(live.kernel_release())  # 6.18+ names every non-init netns: a line
    # without one is init's
    exp = Exporter(wanted, refresh, names_init, discover_every=discover)
    exp.reader.host_root = host_root
    exp.detail = detail
    exp.compat = compat
    if textfile_dir:
        textfile(exp, textfile_dir, once)
        return
    serve(exp, addresses, web_config=web_config, telemetry_path=telemetry_path, max_requests=max_requests)

