"""--web.config.file: exporter-toolkit's format read as the toolkit reads it, and every setting
Python cannot honour refused with a one-line reason (never silently weaker)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctdoctor.errors import UsageError
from ctdoctor.monitor.webconfig import Authenticator, parse

DATA = Path(__file__).parent.parent / "data" / "webconfig"


def test_the_toolkits_own_sample_is_read():
    cfg = parse((DATA / "toolkit-sample.yml").read_bytes(), "web.yml")
    assert cfg.tls is not None and (cfg.tls.cert_file, cfg.tls.key_file) == ("server.crt", "server.key")
    assert cfg.tls.client_auth_type == "NoClientCert" and cfg.tls.min_version == "TLS12"
    assert sorted(cfg.users) == ["alice", "bob"] and cfg.users["alice"].startswith(b"$2y$10$")
    assert cfg.auth_excluded == ["/-/healthy", "/-/ready"]


def test_a_full_config_is_read_with_every_setting():
    cfg = parse(b"""
tls_server_config:
  cert_file: /etc/ssl/s.crt
  key_file: /etc/ssl/s.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: /etc/ssl/ca.crt
  client_allowed_sans: [prometheus.example]
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: true
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
rate_limit:
  interval: 500ms
  burst: 5
""")
    t = cfg.tls
    assert t is not None and t.client_allowed_sans == ["prometheus.example"] and t.min_version == "TLS13"
    assert not t.prefer_server_cipher_suites and t.curve_preferences == ["X25519", "CurveP256"]
    assert cfg.headers == {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}
    assert (cfg.rate_interval, cfg.rate_burst) == (0.5, 5)


def test_an_empty_file_means_plain_http_without_auth():
    cfg = parse(b"")
    assert cfg.tls is None and not cfg.users and cfg.ssl_context() is None


@pytest.mark.parametrize("text,reason", [
    (b"tls_server_config: [1]", "must be a mapping"),
    (b"tls_server_config:\n  cert_file: a\n", "needs key_file"),
    (b"tls_server_config:\n  key_file: a\n", "needs cert_file"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
     "not supported"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
     "needs client_ca_file"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca\n", "does not verify"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n", "one of TLS10"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
     "min_version is above"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_NULL]\n", "'TLS_NULL' is not known"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n", "client_allowed_sans needs"),
    (b"tls_server_config:\n  cert_file: a\n  key_file: b\n  typo: 1\n", "unknown key 'typo'"),
    (b"http_server_config:\n  headers:\n    Set-Cookie: a\n", "'Set-Cookie' cannot be set"),
    (b"http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "deny or sameorigin"),
    (b"basic_auth_users:\n  alice: plaintext\n", "not a bcrypt hash (make one with: ctdoctor exporter --hash-password)"),
    (b"basic_auth_users:\n  'a:b': $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n", "not a user name"),
    (b"rate_limit:\n  interval: soon\n", "a duration such as 1s"),
    (b"basic_auth_excluded_paths: metrics\n", "list of paths"),
    (b"web: {}\n", "unknown key 'web'"),
    (b"- a\n- b\n", "top level must be a mapping"),
    (b"a: [\n", "line 2: not valid YAML"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_each_mistake_is_one_line_naming_the_setting(text, reason):
    with pytest.raises(UsageError) as e:
        parse(text, "/etc/ctd/web.yml")
    msg = str(e.value)
    assert reason in msg and msg.startswith("--web.config.file /etc/ctd/web.yml: ") and "\n" not in msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_parse_or_give_a_usage_error(raw):
    try:
        parse(raw)
    except UsageError as e:
        assert "\n" not in str(e)


def test_missing_certificate_files_are_named(tmp_path):
    cfg = parse(b"tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n", str(tmp_path / "web.yml"))
    with pytest.raises(UsageError, match=r"s\.crt: No such file"):
        cfg.ssl_context()


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_checks_bcrypt_hashes_including_htpasswds_2y():
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")
    auth = Authenticator({"alice": h.encode()})
    assert auth.check(header("alice", "s3cret")) == "alice"
    assert auth.check(header("alice", "s3cret")) == "alice"  # from the cache
    assert auth.check(header("alice", "wrong")) is None
    assert auth.check(header("mallory", "s3cret")) is None
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                "Basic " + base64.b64encode(b"\xff:\xfe").decode()):
        assert auth.check(bad) is None


def test_hash_password_prints_a_hash_the_config_accepts(tmp_path):
    from tests.conftest import run_cli

    rc, out, err = run_cli("exporter", "--hash-password", input=b"correct horse\n")
    assert rc == 0, err
    h = out.strip()
    assert bcrypt.checkpw(b"correct horse", h.encode())
    cfg = parse(f"basic_auth_users:\n  prom: {h}\n".encode())
    assert Authenticator(cfg.users).check(header("prom", "correct horse")) == "prom"
    rc, out, err = run_cli("exporter", "--hash-password", input=b"\n")
    assert rc == 2 and "password is empty" in err


def test_tls_versions_map_to_pythons():
    from ctdoctor.monitor.webconfig import VERSIONS

    assert VERSIONS["TLS12"] == ssl.TLSVersion.TLSv1_2 and VERSIONS["TLS13"] == ssl.TLSVersion.TLSv1_3
