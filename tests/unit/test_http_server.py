"""The exporter's bounded HTTP server on real sockets (127.0.0.1 and ::1, ports chosen by the
kernel): limits, timeouts, keep-alive, gzip, TLS with client certificates (made by openssl), basic
auth, and its config re-read. Every server is stopped at the end of its test."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time

import bcrypt
import pytest

from ctdoctor.monitor.http import BoundedServer, Limits, Request, Response
from tests.conftest import wait_until


def hello(req: Request) -> Response:
    if req.path == "/big":
        return Response(200, b"x" * 100_000, gzip_ok=True)
    if req.path == "/boom":
        raise RuntimeError("boom")
    return Response(200, f"hello {req.user or ''} {req.path}\n".encode(), gzip_ok=True)


@contextlib.contextmanager
def running(handler=hello, limits: Limits | None = None, web: str | None = None, addresses=None):
    srv = BoundedServer(addresses or [("127.0.0.1", 0)], handler, limits or Limits(), web)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        t.join(5)
        assert not t.is_alive()


def request(port: int, raw: bytes, host: str = "127.0.0.1", timeout: float = 5.0, wrap=None) -> bytes:
    """Send raw bytes on a new connection; everything the server sends until it closes or goes quiet."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    if wrap:
        s = wrap(s)
    try:
        s.sendall(raw)
        out = b""
        while True:
            try:
                chunk = s.recv(1 << 16)
            except (TimeoutError, ConnectionResetError):  # quiet, or closed with data unread (a reset)
                return out
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def get(path="/", headers="", version="HTTP/1.1", close=True) -> bytes:
    return (f"GET {path} {version}\r\nHost: x\r\n{headers}" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_a_request_is_answered_and_the_connection_kept_alive():
    with running() as srv:
        port = srv.server_address[1]
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        took = []
        try:
            for i in range(30):
                t = time.perf_counter()
                s.sendall(get(f"/n{i}", close=False))
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(f"/n{i}\n".encode()):
                    data += s.recv(4096)
                took.append(time.perf_counter() - t)
                assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" not in data
        finally:
            s.close()
        # one write per answer with TCP_NODELAY: no 40 ms wait for a delayed ACK (the old server's
        # separate header and body writes stalled every keep-alive scrape by ~44 ms)
        assert sorted(took)[len(took) // 2] < 0.02, took


def test_pipelined_requests_each_get_their_answer_in_order():
    with running() as srv:
        out = request(srv.server_address[1], get("/a", close=False) + get("/b", close=False) + get("/c"))
        assert out.count(b"HTTP/1.1 200 OK") == 3
        assert out.index(b"/a\n") < out.index(b"/b\n") < out.index(b"/c\n")


@pytest.mark.parametrize("raw,code", [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405),  # closed: no wait
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
])
def test_bad_requests_get_their_status_and_the_server_goes_on(raw, code):
    with running() as srv:
        port = srv.server_address[1]
        assert status(request(port, raw)) == code
        assert status(request(port, get())) == 200


def test_head_has_no_body_and_http10_closes():
    with running() as srv:
        port = srv.server_address[1]
        out = request(port, b"HEAD /x HTTP/1.0\r\n\r\n")
        assert status(out) == 200 and out.endswith(b"\r\n\r\n") and b"Connection: close" in out


def test_headers_too_large_get_431():
    with running(limits=Limits(max_header_bytes=1024)) as srv:
        out = request(srv.server_address[1], b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * 5000 + b"\r\n\r\n")
        assert status(out) == 431


def test_gzip_only_when_asked():
    with running() as srv:
        port = srv.server_address[1]
        out = request(port, get("/big", "Accept-Encoding: gzip, deflate\r\n"))
        head, body = out.split(b"\r\n\r\n", 1)
        assert b"Content-Encoding: gzip" in head and gzip.decompress(body) == b"x" * 100_000
        out = request(port, get("/big", "Accept-Encoding: gzip;q=0\r\n"))
        assert b"Content-Encoding" not in out.split(b"\r\n\r\n")[0]


def test_headers_that_never_finish_are_cut_off():
    with running(limits=Limits(read_timeout=0.5)) as srv:
        t = time.monotonic()
        out = request(srv.server_address[1], b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=10)
        assert status(out) == 408 and time.monotonic() - t < 5
        assert srv.stats["timeouts"] == 1


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout():
    with running(limits=Limits(idle_timeout=0.5)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
        try:
            s.sendall(get(close=False))
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            t = time.monotonic()
            assert s.recv(4096) == b""  # closed by the server
            assert time.monotonic() - t < 5
        finally:
            s.close()


def test_in_flight_cap_turns_the_excess_away_with_503_at_once():
    release = threading.Event()

    def slow(req):
        release.wait(10)
        return Response(200, b"done\n")

    with running(slow, Limits(workers=1, max_requests=2)) as srv:
        port = srv.server_address[1]
        socks = []
        for i in range(3):  # one with the worker, two waiting: the cap
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(get())
            socks.append(s)
            wait_until(lambda i=i: sum(c.busy for c in list(srv._conns.values())) == i + 1)  # handed on, in order
        t = time.monotonic()
        assert status(request(port, get())) == 503
        assert time.monotonic() - t < 1  # at once, not after the others
        release.set()
        for s in socks:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.close()
        assert srv.stats["rejected_busy"] == 1


def test_when_connections_run_out_the_longest_idle_is_closed_to_make_room():
    with running(limits=Limits(max_conns=5)) as srv:
        port = srv.server_address[1]
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
        wait_until(lambda: len(srv._conns) == 5)  # all five accepted
        try:
            assert status(request(port, get())) == 200  # a scraper still gets in
            assert idle[0].recv(10) == b""  # the oldest idle one made room
            assert srv.stats["evicted"] >= 1
        finally:
            for s in idle:
                s.close()


def test_a_handler_that_raises_loses_no_worker():
    with running(limits=Limits(workers=1)) as srv:
        port = srv.server_address[1]
        assert request(port, get("/boom")) == b""  # closed without an answer
        assert status(request(port, get())) == 200


def test_every_address_means_ipv6_and_ipv4_on_one_port():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with running(addresses=[("", 0)]) as srv:
        port = srv.server_address[1]
        assert status(request(port, get(), host="127.0.0.1")) == 200
        assert status(request(port, get(), host="::1")) == 200


def test_a_taken_port_is_a_one_line_failure():
    from ctdoctor.errors import Failure

    with running() as srv, pytest.raises(Failure, match=r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"):
        BoundedServer([("127.0.0.1", srv.server_address[1])], hello)


# ---- TLS and basic auth --------------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # made at once, unlike an RSA key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate from the CA (SAN prometheus),
    another client certificate from a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "stranger"):
        openssl("req", "-x509", *EC_KEY, "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                "-days", "2", "-subj", f"/CN={ca}", cwd=d)

    def leaf(name, ca, san):
        openssl("req", *EC_KEY, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)

    leaf("server", "ca", "IP:127.0.0.1")
    leaf("client", "ca", "DNS:prometheus")
    leaf("other", "ca", "DNS:somebody")
    leaf("intruder", "stranger", "DNS:prometheus")
    return d


def client_ctx(pki, cert: str | None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return lambda s: ctx.wrap_socket(s, server_hostname="127.0.0.1")


def web_file(tmp_path, text: str):
    p = tmp_path / "web.yml"
    p.write_text(text)
    return str(p)


@needs_openssl
def test_tls_with_client_certificates_lets_in_only_the_allowed_client(pki, tmp_path):
    web = web_file(tmp_path, f"""
tls_server_config:
  cert_file: {pki}/server.crt
  key_file: {pki}/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki}/ca.crt
  client_allowed_sans: [prometheus]
""")
    with running(web=web) as srv:
        port = srv.server_address[1]
        assert status(request(port, get(), wrap=client_ctx(pki, "client"))) == 200
        for who in (None, "intruder", "other"):  # no certificate, a stranger's CA, a SAN not allowed
            with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
                out = request(port, get(), wrap=client_ctx(pki, who))
                assert out == b"", who
        assert request(port, get()) == b""  # plain HTTP on the TLS port: closed
        assert status(request(port, get(), wrap=client_ctx(pki, "client"))) == 200  # still serving


@needs_openssl
def test_basic_auth_over_tls_and_the_excluded_paths(pki, tmp_path):
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = web_file(tmp_path, f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  prom: {h}
basic_auth_excluded_paths: [/-/healthy]
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
""")
    for f in ("server.crt", "server.key"):  # relative to the config file, as the toolkit reads them
        shutil.copy(pki / f, tmp_path / f)
    import base64

    good = "Authorization: Basic " + base64.b64encode(b"prom:pw").decode() + "\r\n"
    bad = "Authorization: Basic " + base64.b64encode(b"prom:nope").decode() + "\r\n"
    with running(web=web) as srv:
        port, tls = srv.server_address[1], client_ctx(pki, None)
        out = request(port, get(), wrap=tls)
        assert status(out) == 401 and b'WWW-Authenticate: Basic realm="ctdoctor"' in out
        assert status(request(port, get(headers=bad), wrap=tls)) == 401
        out = request(port, get(headers=good), wrap=tls)
        assert status(out) == 200 and b"hello prom /" in out and b"X-Content-Type-Options: nosniff" in out
        assert status(request(port, get("/-/healthy"), wrap=tls)) == 200
        assert srv.stats["unauthorized"] == 2


def test_the_config_is_read_again_when_it_changes_and_a_broken_one_answers_500(tmp_path):
    import base64

    h1 = bcrypt.hashpw(b"one", bcrypt.gensalt(4)).decode()
    h2 = bcrypt.hashpw(b"two", bcrypt.gensalt(4)).decode()
    web = web_file(tmp_path, f"basic_auth_users:\n  a: {h1}\n")
    auth = {u: "Authorization: Basic " + base64.b64encode(u.encode()).decode() + "\r\n"
            for u in ("a:one", "b:two")}
    with running(web=web) as srv:
        port = srv.server_address[1]
        assert status(request(port, get(headers=auth["a:one"]))) == 200
        assert status(request(port, get(headers=auth["b:two"]))) == 401
        # the file is looked at once a second at most: wait for the answer that says it was read again
        # (each version differs in size: a change within the file system's time granularity is seen too)
        (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  b: {h2}\n# b instead of a\n")
        wait_until(lambda: status(request(port, get(headers=auth["b:two"]))) == 200, timeout=5)
        assert status(request(port, get(headers=auth["a:one"]))) == 401  # a was removed
        (tmp_path / "web.yml").write_text("basic_auth_users: [\n")
        wait_until(lambda: status(request(port, get(headers=auth["b:two"]))) != 200, timeout=5)
        assert status(request(port, get(headers=auth["b:two"]))) == 500  # never the old users silently
        (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  b: {h2}\n")
        wait_until(lambda: status(request(port, get(headers=auth["b:two"]))) == 200, timeout=5)


def test_rate_limit_answers_429_beyond_the_burst(tmp_path):
    web = web_file(tmp_path, "rate_limit:\n  interval: 10s\n  burst: 2\n")
    with running(web=web) as srv:
        port = srv.server_address[1]
        assert [status(request(port, get())) for _ in range(3)] == [200, 200, 429]
