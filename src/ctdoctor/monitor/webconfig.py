"""``--web.config.file``: the Prometheus exporter-toolkit web configuration (TLS, basic auth, headers,
rate limit), so an operator's existing file works unchanged.

Format: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md
(``tls_server_config``, ``http_server_config``, ``basic_auth_users`` with bcrypt hashes,
``rate_limit``). Unknown keys are refused, as the toolkit's strict YAML decoding does. A setting
Python's ``ssl`` cannot honour is refused with the reason, never silently dropped: an operator who
asked for client certificates must not get a server that accepts anyone.

``parse`` is pure (text in, ``WebConfig`` out); ``WebConfig.ssl_context`` reads the files it names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

from ctdoctor.errors import UsageError
from ctdoctor.sources import files

# Go's crypto/tls suite names (what the toolkit accepts) -> OpenSSL's. TLS 1.3 suites are not
# configurable in Go either.
CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
            "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
               "RequireAndVerifyClientCert")
HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
           "Strict-Transport-Security")
TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
            "curve_preferences")


Bad = Callable[[str], UsageError]  # makes the one-line error that names the file


@dataclass
class Tls:
    cert_file: str = ""
    key_file: str = ""
    cert: str = ""  # inline PEM
    key: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: list[str] = field(default_factory=list)
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: list[str] = field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = field(default_factory=list)


@dataclass
class WebConfig:
    path: str = ""
    tls: Tls | None = None
    headers: dict[str, str] = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict)  # basic auth: user -> bcrypt hash
    auth_excluded: list[str] = field(default_factory=list)  # paths served without basic auth
    rate_interval: float = 0.0  # seconds between requests (token bucket); 0 = no limit
    rate_burst: int = 0

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None without tls_server_config); reads the certificate files."""
        if self.tls is None:
            return None
        t = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version, ctx.maximum_version = VERSIONS[t.min_version], VERSIONS[t.max_version]
        try:
            if t.cert_file:
                ctx.load_cert_chain(self._file(t.cert_file), self._file(t.key_file))
            else:
                with files.MemFile(t.cert.encode()) as cert, files.MemFile(t.key.encode()) as key:
                    ctx.load_cert_chain(cert, key)
            if t.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
                if t.client_ca_file:
                    ctx.load_verify_locations(cafile=self._file(t.client_ca_file))
                else:
                    ctx.load_verify_locations(cadata=t.client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED if t.client_auth_type == "RequireAndVerifyClientCert" \
                    else ssl.CERT_OPTIONAL
            if t.cipher_suites:
                ctx.set_ciphers(":".join(CIPHERS[c] for c in t.cipher_suites))
            if t.prefer_server_cipher_suites:
                ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
            if t.curve_preferences:
                ctx.set_ecdh_curve(CURVES[t.curve_preferences[0]])  # Python's ssl takes one curve
        except ssl.SSLError as e:
            raise UsageError(f"--web.config.file {self.path}: TLS: {e.reason or e}") from None
        except OSError as e:
            raise UsageError(f"--web.config.file {self.path}: {e.filename or 'TLS'}: {e.strerror}") from None
        return ctx

    def _file(self, name: str) -> str:
        # relative paths are relative to the config file, as the toolkit reads them
        path = name if os.path.isabs(name) else os.path.join(os.path.dirname(self.path) or ".", name)
        try:
            files.check_readable(path)
        except OSError as e:  # ssl's own error would not say which file
            raise UsageError(f"--web.config.file {self.path}: {path}: {e.strerror}") from None
        return path


def load(path: str) -> WebConfig:
    """Read and check ``--web.config.file``; a one-line UsageError for anything wrong."""
    try:
        raw = files.read_bytes(path, 1 << 20)
    except OSError as e:
        raise UsageError(f"--web.config.file {path}: {e.strerror}") from None
    cfg = parse(raw, path)
    cfg.ssl_context()  # the certificates load now, not at the first scrape
    return cfg


def parse(raw: bytes, path: str = "web-config.yml") -> WebConfig:
    def bad(msg: str) -> UsageError:
        return UsageError(f"--web.config.file {path}: {msg}")

    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise bad(f"{where}not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise bad("the top level must be a mapping")
    cfg = WebConfig(path=path)
    for key in doc:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users", "basic_auth_excluded_paths",
                       "rate_limit"):
            raise bad(f"unknown key {key!r}")
    tls = _mapping(doc.get("tls_server_config"), "tls_server_config", bad)
    if tls:
        cfg.tls = _tls(tls, bad)
    _http(_mapping(doc.get("http_server_config"), "http_server_config", bad), cfg, bad)
    _users(_mapping(doc.get("basic_auth_users"), "basic_auth_users", bad), cfg, bad)
    _rate(_mapping(doc.get("rate_limit"), "rate_limit", bad), cfg, bad)
    excluded = doc.get("basic_auth_excluded_paths") or []
    if not isinstance(excluded, list) or not all(isinstance(p, str) and p.startswith("/") for p in excluded):
        raise bad("basic_auth_excluded_paths must be a list of paths (/-/healthy)")
    cfg.auth_excluded = list(excluded)
    return cfg


def _http(http: dict[str, Any], cfg: WebConfig, bad: Bad) -> None:
    for key in http:
        if key not in ("http2", "headers"):
            raise bad(f"http_server_config: unknown key {key!r}")
    if "http2" in http and not isinstance(http["http2"], bool):
        raise bad("http_server_config.http2 must be true or false")
    for name, value in _mapping(http.get("headers"), "http_server_config.headers", bad).items():
        if name not in HEADERS:
            raise bad(f"http_server_config.headers: {name!r} cannot be set (one of: {', '.join(HEADERS)})")
        if not isinstance(value, str) or any(c in value for c in "\r\n"):
            raise bad(f"http_server_config.headers.{name} must be one line of text")
        if name == "X-Frame-Options" and value.lower() not in ("deny", "sameorigin"):
            raise bad("http_server_config.headers.X-Frame-Options must be deny or sameorigin")
        if name == "X-Content-Type-Options" and value.lower() != "nosniff":
            raise bad("http_server_config.headers.X-Content-Type-Options must be nosniff")
        if value:
            cfg.headers[name] = value


def _users(users: dict[str, Any], cfg: WebConfig, bad: Bad) -> None:
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise bad(f"basic_auth_users: {user!r} is not a user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            raise bad(f"basic_auth_users.{user}: not a bcrypt hash (make one with: ctdoctor exporter --hash-password)")
        cfg.users[user] = hashed.encode()


def _rate(rate: dict[str, Any], cfg: WebConfig, bad: Bad) -> None:
    for key in rate:
        if key not in ("interval", "burst"):
            raise bad(f"rate_limit: unknown key {key!r}")
    if rate:
        cfg.rate_interval = _duration(rate.get("interval", 0), bad)
        burst = rate.get("burst", 0)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise bad("rate_limit.burst must be a whole number >= 0")
        cfg.rate_burst = burst


def _mapping(v: object, where: str, bad: Bad) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad(f"{where} must be a mapping")
    return v


def _tls(t: dict[str, Any], bad: Bad) -> Tls:
    for key in t:
        if key not in TLS_KEYS:
            raise bad(f"tls_server_config: unknown key {key!r}")
    out = Tls()
    for key in ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file", "client_auth_type",
                "min_version", "max_version"):
        if key in t and t[key] is not None:
            if not isinstance(t[key], str):
                raise bad(f"tls_server_config.{key} must be text")
            setattr(out, key, t[key])
    if bool(out.cert_file) == bool(out.cert):
        raise bad("tls_server_config needs cert_file (or cert, inline), one of them")
    if bool(out.key_file) == bool(out.key):
        raise bad("tls_server_config needs key_file (or key, inline), one of them")
    if out.client_ca_file and out.client_ca:
        raise bad("tls_server_config: give client_ca_file or client_ca, not both")
    if out.client_auth_type not in CLIENT_AUTH:
        raise bad(f"tls_server_config.client_auth_type {out.client_auth_type!r}: one of {', '.join(CLIENT_AUTH)}")
    if out.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        # Python's ssl cannot ask for a certificate without verifying it; refusing is safer than guessing
        raise bad(f"tls_server_config.client_auth_type {out.client_auth_type} is not supported (it accepts "
                  "unverified certificates): use RequireAndVerifyClientCert with client_ca_file")
    _tls_checks(t, out, bad)
    return out


def _tls_checks(t: dict[str, Any], out: Tls, bad: Bad) -> None:
    verifies = out.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if verifies and not (out.client_ca_file or out.client_ca):
        raise bad(f"tls_server_config.client_auth_type {out.client_auth_type} needs client_ca_file")
    if (out.client_ca_file or out.client_ca) and not verifies:
        raise bad("tls_server_config.client_ca_file is set but client_auth_type does not verify client "
                  "certificates: set client_auth_type: RequireAndVerifyClientCert")
    for key in ("min_version", "max_version"):
        if getattr(out, key) not in VERSIONS:
            raise bad(f"tls_server_config.{key} {getattr(out, key)!r}: one of {', '.join(VERSIONS)}")
    if VERSIONS[out.min_version] > VERSIONS[out.max_version]:
        raise bad("tls_server_config: min_version is above max_version")
    for key, known in (("cipher_suites", CIPHERS), ("curve_preferences", CURVES),
                       ("client_allowed_sans", None)):
        v = t.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad(f"tls_server_config.{key} must be a list of text")
        for x in v:
            if known is not None and x not in known:
                raise bad(f"tls_server_config.{key}: {x!r} is not known (one of: {', '.join(known)})")
        setattr(out, key, list(v))
    if out.client_allowed_sans and out.client_auth_type != "RequireAndVerifyClientCert":
        raise bad("tls_server_config.client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert")
    if "prefer_server_cipher_suites" in t:
        if not isinstance(t["prefer_server_cipher_suites"], bool):
            raise bad("tls_server_config.prefer_server_cipher_suites must be true or false")
        out.prefer_server_cipher_suites = t["prefer_server_cipher_suites"]


def _duration(v: object, bad: Bad) -> float:
    """A Prometheus duration (``1s``, ``500ms``, ``1m``) or a number of seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return float(v)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(v).strip())
    if not m:
        raise bad(f"rate_limit.interval {v!r}: a duration such as 1s or 500ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def hash_password(password: str) -> str:
    """The bcrypt hash (cost 10) of a password for ``basic_auth_users``; UsageError when it cannot be one."""
    if not password:
        raise UsageError("--hash-password: the password is empty")
    if len(password.encode()) > 72:
        raise UsageError("--hash-password: bcrypt reads at most 72 bytes of a password; use a shorter one")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()


_DECOY: list[bytes] = []


def _decoy() -> bytes:
    """A bcrypt hash of cost 10 to check unknown users against (made once)."""
    if not _DECOY:
        _DECOY.append(bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(10)))
    return _DECOY[0]


class Authenticator:
    """Basic auth against bcrypt hashes; a password that matched once is remembered (by a digest,
    never in clear), as the toolkit caches it, so a scrape does not pay bcrypt's ~70 ms each time."""

    def __init__(self, users: dict[str, bytes]):
        self.users = users
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> str | None:
        """The user name when the Authorization header carries a right password, else None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        hashed = self.users.get(user)
        if not sep or hashed is None:
            # the same time as a wrong password: whether a user exists is not told by the clock
            bcrypt.checkpw(b"x", _decoy())
            return None
        key = hashlib.sha256(hashed + b"\0" + user.encode() + b"\0" + password.encode()).digest()
        with self._lock:
            if key in self._ok:
                return user
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return None
        if ok:
            with self._lock:
                if len(self._ok) > 1024:
                    self._ok.clear()
                self._ok.add(key)
            return user
        return None
