"""The exporter's HTTP server, bounded: it keeps serving scrapes on a node where anyone can connect.

Why not ``http.server.ThreadingHTTPServer``: it starts a thread per connection and reads without a
timeout, so 600 idle connections exhaust a unit's ``TasksMax`` and stop every scrape (and the
refresh, which then cannot start a process). Here:

- one selector thread holds every connection (an fd each, no thread), reads requests
  without blocking, and closes a connection whose request headers do not arrive within
  ``read_timeout`` or that sits idle longer than ``idle_timeout``; when ``max_conns`` are open
  it closes the longest-idle one to make room, so a flood of idle connections never locks
  a scraper out;
- complete requests go to a fixed pool of ``workers`` threads through a queue of
  ``max_requests``; beyond that a request gets ``503`` at once;
- a response is one write (headers and body together, TCP_NODELAY), keep-alive by
  default, gzip when the client asks;
- TLS (the handshake is done in the selector thread, without blocking) and basic auth from
  ``--web.config.file`` (``monitor.webconfig``), re-read when the file changes, as the
  exporter toolkit does.

``handler(request) -> Response`` is the application; it never sees a socket.
"""

from __future__ import annotations

import errno
import gzip as gz
import os
import queue
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ctdoctor.errors import Failure, UsageError
from ctdoctor.monitor import webconfig


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: str
    version: str
    headers: dict[str, str]  # lower-case names
    user: str | None = None  # who basic auth let in
    arrived: float = 0.0  # time.monotonic() when its headers were complete


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    gzip_ok: bool = False  # may be compressed if the client accepts gzip


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


@dataclass
class Limits:
    workers: int = 4
    max_requests: int = 256  # requests waiting or being answered; more get 503
    max_conns: int = 0  # open connections; 0 = from the fd limit
    read_timeout: float = 10.0  # from connect (or the last answer) to complete request headers
    idle_timeout: float = 300.0  # a kept-alive connection with nothing asked (Prometheus scrapes every 15-60 s)
    write_timeout: float = 10.0
    max_header_bytes: int = 16384


class _Conn:
    __slots__ = ("buf", "busy", "closed", "deadline", "last", "peer", "sock", "tls_done")

    def __init__(self, sock: socket.socket, peer: Any, deadline: float, tls_done: bool):
        self.sock, self.peer = sock, peer
        self.buf = bytearray()
        self.deadline, self.last = deadline, time.monotonic()
        self.tls_done = tls_done
        self.busy = False  # with a worker
        self.closed = False


class _WebState:
    """The web config as last read, re-read when its file changes (checked at most once a second)."""

    def __init__(self, path: str | None):
        self.path = path
        self.cfg = webconfig.load(path) if path else webconfig.WebConfig()
        self.ctx = self.cfg.ssl_context()
        self.auth = webconfig.Authenticator(self.cfg.users) if self.cfg.users else None
        self.error = ""  # why the file as it is now cannot be used (every request gets 500 until fixed)
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._tokens, self._filled = float(self.cfg.rate_burst), time.monotonic()

    def _stat(self) -> tuple[int, int, int] | str | None:
        if not self.path:
            return None
        try:
            st = os.stat(self.path)
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as e:
            return e.strerror

    def current(self) -> _WebState:
        if not self.path:
            return self
        with self._lock:
            now = time.monotonic()
            if now - self._checked < 1.0:
                return self
            self._checked = now
            stamp = self._stat()
            if stamp == self._stamp:
                return self
            self._stamp = stamp
            try:
                cfg = webconfig.load(self.path)
                ctx = cfg.ssl_context()
            except UsageError as e:
                if str(e) != self.error:
                    print(f"ctdoctor exporter: {e}; answering 500 until it is fixed", file=sys.stderr, flush=True)
                self.error = str(e)
                return self
            if (ctx is None) != (self.ctx is None):
                msg = f"--web.config.file {self.path}: TLS cannot be turned on or off without a restart"
                if msg != self.error:
                    print(f"ctdoctor exporter: {msg}; answering 500 until it is restored", file=sys.stderr, flush=True)
                self.error = msg
                return self
            self.cfg, self.ctx, self.error = cfg, ctx, ""
            self.auth = webconfig.Authenticator(cfg.users) if cfg.users else None
            self._tokens, self._filled = float(cfg.rate_burst), now
            print(f"ctdoctor exporter: --web.config.file {self.path} read again", file=sys.stderr, flush=True)
            return self

    def take_token(self) -> bool:
        """The rate limit's token bucket: False when this request is over the limit."""
        if not self.cfg.rate_interval:
            return True
        with self._lock:
            now = time.monotonic()
            cap = max(1, self.cfg.rate_burst)
            self._tokens = min(cap, self._tokens + (now - self._filled) / self.cfg.rate_interval)
            self._filled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


def raise_fd_limit() -> int:
    """Raise this process's soft fd limit to the hard one (as Go programs do); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket; host "" is every address: IPv6 and IPv4 on one socket where the host has
    IPv6, else IPv4."""
    if host == "localhost":
        host = "127.0.0.1"
    tries = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")] if not host else \
        [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
    last: OSError | None = None
    for fam, addr in tries:
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as e:  # no IPv6 in this kernel
            last = e
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6 and not host:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((addr, port))
            s.listen(1024)
            s.setblocking(False)
            return s
        except OSError as e:
            s.close()
            last = e
            if e.errno != errno.EAFNOSUPPORT and e.errno != errno.EADDRNOTAVAIL:
                break
    shown = f"[{host}]" if ":" in host else (host or "*")
    raise Failure(f"cannot listen on {shown}:{port}: {last.strerror if last else 'no address family'}")


class BoundedServer:
    def __init__(self, addresses: list[tuple[str, int]], handler: Callable[[Request], Response],
                 limits: Limits | None = None, web_config: str | None = None):
        self.limits = limits or Limits()
        self.handler = handler
        self.web = _WebState(web_config)
        fds = raise_fd_limit()
        if not self.limits.max_conns:
            # leave room for the namespaces' held files (two per netns) and everything else
            self.limits.max_conns = max(16, min(20000, (fds - 512) // 2))
        self.listeners = []
        try:
            for host, port in addresses:
                self.listeners.append(listen_socket(host, port))
        except BaseException:
            for s in self.listeners:
                s.close()
            raise
        self.addresses: list[tuple[str, int]] = [s.getsockname()[:2] for s in self.listeners]
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._jobs: queue.Queue[tuple[_Conn, float] | None] = queue.Queue(self.limits.max_requests)
        self._back: deque[tuple[_Conn, bool]] = deque()  # connections workers hand back (keep alive or not)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._paused_until = 0.0  # accepting paused (out of fds) until then
        self.stats = {"requests": 0, "rejected_busy": 0, "timeouts": 0, "evicted": 0, "unauthorized": 0,
                      "rate_limited": 0}

    @property
    def server_address(self) -> tuple[str, int]:
        return self.addresses[0]

    # ---- the selector thread -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        for _ in range(self.limits.workers):
            t = threading.Thread(target=self._work, name="http-worker", daemon=True)
            t.start()
            self._workers.append(t)
        for s in self.listeners:
            self._sel.register(s, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._paused_until and now >= self._paused_until:
                    self._paused_until = 0.0
                    for s in self.listeners:
                        self._sel.register(s, selectors.EVENT_READ, "listen")
                for key, events in self._sel.select(timeout=0.5):
                    if key.data == "listen":
                        self._accept(cast(socket.socket, key.fileobj))
                    elif key.data == "wake":
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self._ready(key.data, events)
                self._take_back()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.5
        finally:
            self._close_all()

    def shutdown(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of fds: make room from the idle, and stop accepting for a moment
                    if not self._evict_idle():
                        self._paused_until = time.monotonic() + 0.1
                        for s in self.listeners:
                            self._sel.unregister(s)
                    return
                return  # ECONNABORTED and friends: the client left
            if len(self._conns) >= self.limits.max_conns and not self._evict_idle():
                self._refuse(sock, 503, b"too many connections\n")
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            web = self.web.current()
            tls_done = web.ctx is None
            if web.ctx is not None:
                try:
                    sock = web.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    sock.close()
                    continue
            c = _Conn(sock, peer, time.monotonic() + self.limits.read_timeout, tls_done)
            self._conns[sock.fileno()] = c
            self._sel.register(sock, selectors.EVENT_READ, c)
            if not tls_done:
                self._handshake(c)

    def _refuse(self, sock: socket.socket, status: int, body: bytes) -> None:
        try:
            sock.setblocking(False)
            sock.send(_response_bytes(Response(status, body), keep=False, head=False))
        except OSError:
            pass
        sock.close()

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest (never one with a worker); False if none is idle."""
        idle = [c for c in self._conns.values() if not c.busy and not c.buf]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.last))
        self.stats["evicted"] += 1
        return True

    def _handshake(self, c: _Conn) -> None:
        try:
            cast(ssl.SSLSocket, c.sock).do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(c.sock, selectors.EVENT_READ, c)
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(c.sock, selectors.EVENT_WRITE, c)
            return
        except (OSError, ValueError):  # a bad certificate, a port scan, plain HTTP on the TLS port
            self._close(c)
            return
        sans = self.web.cfg.tls.client_allowed_sans if self.web.cfg.tls else []
        if sans and not _san_allowed(cast(ssl.SSLSocket, c.sock).getpeercert() or {}, sans):
            self._close(c)
            return
        c.tls_done = True
        self._sel.modify(c.sock, selectors.EVENT_READ, c)

    def _ready(self, c: _Conn, events: int) -> None:
        if c.closed:
            return
        if not c.tls_done:
            self._handshake(c)
            return
        while True:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ValueError):
                self._close(c)
                return
            if not data:
                self._close(c)
                return
            c.buf += data
            c.last = time.monotonic()
            if len(c.buf) > self.limits.max_header_bytes + 65536:
                break
            if not isinstance(c.sock, ssl.SSLSocket) or not c.sock.pending():
                break
        self._dispatch(c)

    def _dispatch(self, c: _Conn) -> None:
        """Hand a complete request to the workers (503 when too many wait)."""
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.buf) > self.limits.max_header_bytes:
                self._answer_and_close(c, 431, b"request headers too large\n")
            return
        if end > self.limits.max_header_bytes:
            self._answer_and_close(c, 431, b"request headers too large\n")
            return
        self._sel.unregister(c.sock)
        c.busy = True
        try:
            self._jobs.put_nowait((c, time.monotonic()))
        except queue.Full:
            self.stats["rejected_busy"] += 1
            c.busy = False
            self._answer_and_close(c, 503, b"too many requests in flight; try again\n", registered=False)

    def _answer_and_close(self, c: _Conn, status: int, body: bytes, registered: bool = True) -> None:
        try:
            c.sock.send(_response_bytes(Response(status, body), keep=False, head=False))
        except (OSError, ValueError):
            pass
        self._close(c, registered)

    def _take_back(self) -> None:
        while self._back:
            c, keep = self._back.popleft()
            c.busy = False
            if c.closed:
                continue
            if not keep:
                self._close(c, registered=False)
                continue
            c.last = time.monotonic()
            c.deadline = c.last + (self.limits.read_timeout if c.buf else self.limits.idle_timeout)
            try:
                self._sel.register(c.sock, selectors.EVENT_READ, c)
            except (OSError, ValueError, KeyError):
                self._close(c, registered=False)
                continue
            if c.buf:  # a pipelined request already here
                self._dispatch(c)

    def _sweep(self, now: float) -> None:
        for c in [c for c in self._conns.values() if not c.busy and c.deadline < now]:
            if c.buf and c.tls_done:
                self.stats["timeouts"] += 1
                self._answer_and_close(c, 408, b"request not received in time\n")
            else:
                if not c.tls_done:
                    self.stats["timeouts"] += 1
                self._close(c)

    def _close(self, c: _Conn, registered: bool = True) -> None:
        if c.closed:
            return
        c.closed = True
        self._conns.pop(c.sock.fileno(), None)
        if registered:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError, OSError):
                pass
        try:
            c.sock.close()
        except OSError:
            pass

    def _close_all(self) -> None:
        for _ in self._workers:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                pass
        for c in list(self._conns.values()):
            if not c.busy:
                self._close(c)
        for s in self.listeners:
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        for t in self._workers:
            t.join(2)
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # ---- the workers ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None or self._stop.is_set():
                return
            c, arrived = item
            keep = False
            try:
                keep = self._serve_one(c, arrived)
            except Exception as e:  # never lose a worker
                print(f"ctdoctor exporter: internal error answering {c.peer}: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
            if keep and not self._stop.is_set():
                try:
                    c.sock.setblocking(False)
                except (OSError, ValueError):
                    keep = False
            # only the selector thread touches the connection table: it closes or watches this one again
            self._back.append((c, keep))
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _serve_one(self, c: _Conn, arrived: float) -> bool:
        end = c.buf.find(b"\r\n\r\n")
        head, rest = bytes(c.buf[:end]), c.buf[end + 4:]
        c.buf = bytearray(rest)
        self.stats["requests"] += 1
        req, problem = _parse(head)
        keep = False
        if problem is not None:
            resp = problem
        else:
            assert req is not None
            req.arrived = arrived
            keep = _keep_alive(req)
            if ("content-length" in req.headers and req.headers["content-length"].strip() != "0") \
                    or "transfer-encoding" in req.headers:
                resp, keep = Response(413, b"a request body is not accepted here\n"), False
            else:
                resp = self._respond(req)
        if resp.status >= 500 or resp.status in (400, 408, 413, 431, 505):
            keep = False
        accepts = req.headers.get("accept-encoding", "") if req else ""
        head_only = req is not None and req.method == "HEAD"
        data = _response_bytes(resp, keep=keep, head=head_only, gzip=resp.gzip_ok and _accepts_gzip(accepts),
                               extra=self.web.cfg.headers)
        c.sock.settimeout(self.limits.write_timeout)
        try:
            c.sock.sendall(data)
        except (OSError, ValueError):
            return False
        return keep

    def _respond(self, req: Request) -> Response:
        web = self.web.current()
        if web.error:
            return Response(500, b"the web config file is not valid; see the exporter's log\n")
        if not web.take_token():
            self.stats["rate_limited"] += 1
            return Response(429, b"rate limited\n")
        if web.auth is not None and req.path not in web.cfg.auth_excluded:
            req.user = web.auth.check(req.headers.get("authorization"))
            if req.user is None:
                self.stats["unauthorized"] += 1
                return Response(401, b"Unauthorized\n", headers=[("WWW-Authenticate", 'Basic realm="ctdoctor"')])
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")])
        return self.handler(req)


def _parse(head: bytes) -> tuple[Request | None, Response | None]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes any byte; kept for clarity
        return None, Response(400, b"bad request\n")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None, Response(400, b"bad request line\n")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        return None, Response(505, b"HTTP/1.0 or HTTP/1.1 only\n")
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        name, sep, value = ln.partition(":")
        if not sep or not name or name != name.strip() or any(ch in name for ch in " \t"):
            return None, Response(400, b"bad header line\n")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    path, _, query = target.partition("?")
    return Request(method, path, query, version, headers), None


def _keep_alive(req: Request) -> bool:
    conn = req.headers.get("connection", "").lower()
    if req.version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


def _accepts_gzip(value: str) -> bool:
    """Accept-Encoding names gzip (or *) with a q above 0."""
    for part in value.split(","):
        token, *params = [x.strip() for x in part.split(";")]
        if token.lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def _response_bytes(r: Response, *, keep: bool, head: bool, gzip: bool = False,
                    extra: dict[str, str] | None = None) -> bytes:
    body = r.body
    hdrs = [("Content-Type", r.content_type)]
    if gzip and len(body) > 1024:
        body = gz.compress(body, compresslevel=5, mtime=0)
        hdrs.append(("Content-Encoding", "gzip"))
    if r.gzip_ok:
        hdrs.append(("Vary", "Accept-Encoding"))
    hdrs.append(("Content-Length", str(len(body))))
    if not keep:
        hdrs.append(("Connection", "close"))
    hdrs += r.headers
    hdrs += list((extra or {}).items())
    lines = [f"HTTP/1.1 {r.status} {REASONS.get(r.status, 'Status')}"] + [f"{k}: {v}" for k, v in hdrs]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head else out + body


def _san_allowed(cert: dict[str, Any], allowed: list[str]) -> bool:
    """The client certificate names one of the allowed Subject Alternative Names (exactly)."""
    names = {v for _k, v in cert.get("subjectAltName", ())}
    return any(a in names for a in allowed)
