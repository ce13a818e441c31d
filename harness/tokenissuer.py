"""A small but real token server for the distribution registry's ``auth.token`` mode.

It implements the Docker/distribution token protocol:

* ``GET /token?service=S&scope=repository:NAME:pull[,push]`` (``scope`` may repeat), optionally
  with HTTP Basic credentials, answers ``{"token", "access_token", "expires_in", "issued_at"}``;
* ``POST /token`` (OAuth2 form: ``grant_type=password`` with ``username``/``password``, or
  ``grant_type=refresh_token`` with ``refresh_token``) answers ``{"access_token", "scope",
  "expires_in", "issued_at"}`` plus a ``refresh_token`` for ``access_type=offline`` / refreshes.

Tokens are RS256 JWTs with ``iss``, ``sub``, ``aud`` (= service), ``exp``, ``nbf``, ``iat``,
``jti`` and ``access`` claims. distribution v3 (``registry/auth/token/token.go``) accepts a
signing key in one of three ways: an ``x5c`` header whose chain verifies against
``rootcertbundle``, a ``kid`` equal to the RFC 7638 thumbprint of a key in ``rootcertbundle``,
or a ``kid`` listed in a ``jwks`` file. This issuer signs with an RSA key whose self-signed
certificate *is* the root bundle, and sends it as ``x5c``.

Authorisation: a user named in ``users`` with the right password gets every action it asks
for on every repository (or only what ``grants`` allows, when given); an anonymous request
gets ``pull`` on repositories matching ``public`` and nothing else, so an anonymous pull of a
private repository ends in 401 *at the registry*. Wrong credentials get 401 from the issuer.

Every request is recorded (:attr:`TokenIssuer.requests`) so tests can count token fetches.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from harness.registry import TokenAuth

DEFAULT_SERVICE = "kitpin-test-registry"
DEFAULT_ISSUER = "kitpin-test-issuer"


@dataclass(frozen=True, kw_only=True)
class TokenRequest:
    """One request the issuer answered."""

    method: str
    grant_type: str
    """``basic`` / ``anonymous`` for GET, the OAuth2 ``grant_type`` for POST."""
    user: str | None
    scopes: tuple[str, ...]
    status: int


@dataclass(frozen=True, kw_only=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``repository:name:pull,push`` (the name may itself contain ``:`` for hosts)."""
        kind, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            raise ValueError(f"malformed scope {text!r}")
        return cls(type=kind, name=name, actions=tuple(a for a in actions.split(",") if a))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class _State:
    requests: list[TokenRequest] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TokenIssuer:
    """The token server; a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        grants: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        public: Sequence[str] = (),
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        expires_in: int = 300,
        tls: bool = False,
        workdir: Path | None = None,
    ) -> None:
        """``users``: name -> password. ``grants``: name -> {repository glob: actions}; when
        omitted, known users get whatever they ask for. ``public``: repository globs that
        anonymous requests may pull. ``tls``: serve HTTPS with a certificate from a throwaway
        CA (:attr:`ca_file`); clients such as kitpin refuse a plain-HTTP realm on another
        host:port than the registry, because credentials would travel in clear."""
        self.users = dict(users or {})
        self.grants = {u: {g: tuple(a) for g, a in m.items()} for u, m in (grants or {}).items()}
        self.public = tuple(public)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.tls = tls
        self.ca_file: Path | None = None
        """PEM of the CA that signed the issuer's HTTPS certificate (``tls=True`` only)."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kitpin-token-issuer-"))
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = _self_signed(self._key, "kitpin test token signer")
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.rootcertbundle = self.workdir / "token-signer.pem"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rootcertbundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TokenIssuer:
        if self._server is not None:
            return self
        issuer = self

        class Handler(_Handler):
            owner = issuer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            # The handshake happens lazily in each handler thread, not in the accept loop.
            self._server.socket = self._server_ssl_context().wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _server_ssl_context(self) -> ssl.SSLContext:
        import trustme  # dev dependency

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.workdir / "token-issuer-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting this issuer's CA (``None`` for plain HTTP)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the issuer first"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def registry_auth(self) -> TokenAuth:
        """The ``auth.token`` settings for a :class:`RegistryServer` that trusts this issuer."""
        return TokenAuth(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            rootcertbundle=self.rootcertbundle,
        )

    # ------------------------------------------------------------------ bookkeeping

    @property
    def requests(self) -> list[TokenRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def count(self, *, method: str | None = None, user: str | None = None) -> int:
        """Token requests answered so far (any status), optionally by method and user."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and (user is None or r.user == user)
        )

    def _record(self, request: TokenRequest) -> None:
        with self._state.lock:
            self._state.requests.append(request)

    # ------------------------------------------------------------------ tokens

    def allowed(self, user: str | None, scope: Scope) -> tuple[str, ...]:
        """The subset of ``scope.actions`` that ``user`` (None: anonymous) may have."""
        if scope.type != "repository":
            return ()
        if user is None:
            if any(fnmatch.fnmatchcase(scope.name, p) for p in self.public):
                return tuple(a for a in scope.actions if a == "pull")
            return ()
        if user not in self.grants:
            return scope.actions
        permitted: set[str] = set()
        for pattern, actions in self.grants[user].items():
            if fnmatch.fnmatchcase(scope.name, pattern):
                permitted.update(actions)
        if "*" in permitted:
            return scope.actions
        return tuple(a for a in scope.actions if a in permitted)

    def check_password(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        return expected is not None and secrets.compare_digest(expected, password)

    def issue(self, user: str | None, scopes: Sequence[Scope]) -> tuple[str, int, str]:
        """A signed JWT for ``user`` covering what it may do of ``scopes``;
        returns (token, expires_in, issued_at)."""
        now = int(time.time())
        access = []
        for scope in scopes:
            actions = self.allowed(user, scope)
            if actions:
                access.append({"type": scope.type, "name": scope.name, "actions": list(actions)})
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        header = {
            "alg": "RS256",
            "typ": "JWT",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        return f"{signing_input}.{_b64url(signature)}", self.expires_in, issued_at

    def new_refresh_token(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._state.lock:
            self._state.refresh_tokens[token] = user
        return token

    def user_for_refresh_token(self, token: str) -> str | None:
        with self._state.lock:
            return self._state.refresh_tokens.get(token)


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class _Handler(BaseHTTPRequestHandler):
    owner: TokenIssuer
    protocol_version = "HTTP/1.1"
    # The headers and the body are two writes: with Nagle on, the body of an answer on a
    # kept-alive connection waits for the client's delayed ACK of the headers (~40 ms), a
    # stall no real token server has (seen with strace in bench/kyverno.py: Kyverno asks for
    # a token per reference per admission).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are recorded in TokenIssuer.requests instead

    # GET: the classic docker token flow ------------------------------------------------
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._send(HTTPStatus.NOT_FOUND, {"errors": [{"code": "NOT_FOUND"}]})
            return
        query = urllib.parse.parse_qs(url.query)
        raw_scopes = tuple(query.get("scope", []))
        user: str | None = None
        grant = "anonymous"
        header = self.headers.get("Authorization", "")
        if header:
            kind, _, value = header.partition(" ")
            if kind.lower() != "basic":
                self._reject("GET", "unsupported", None, raw_scopes, "unsupported authorization")
                return
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                self._reject("GET", "basic", None, raw_scopes, "malformed basic credentials")
                return
            grant = "basic"
            if not self.owner.check_password(user, password):
                self._reject("GET", grant, user, raw_scopes, "invalid username or password")
                return
        if not self._check_service(query, "GET", grant, user, raw_scopes):
            return
        scopes = self._parse_scopes(raw_scopes, "GET", grant, user)
        if scopes is None:
            return
        token, expires_in, issued_at = self.owner.issue(user, scopes)
        self.owner._record(
            TokenRequest(method="GET", grant_type=grant, user=user, scopes=raw_scopes, status=200)
        )
        body: dict[str, object] = {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": issued_at,
        }
        if query.get("offline_token", [""])[0] == "true" and user is not None:
            body["refresh_token"] = self.owner.new_refresh_token(user)
        self._send(HTTPStatus.OK, body)

    # POST: the OAuth2 flow (password or refresh_token grant) ---------------------------
    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if url.path != "/token":
            self._send(HTTPStatus.NOT_FOUND, {"errors": [{"code": "NOT_FOUND"}]})
            return
        raw_scopes = tuple(s for v in form.get("scope", []) for s in v.split(" ") if s)
        grant = form.get("grant_type", [""])[0]
        user: str | None
        if grant == "password":
            user = form.get("username", [""])[0]
            if not self.owner.check_password(user, form.get("password", [""])[0]):
                self._reject("POST", grant, user, raw_scopes, "invalid username or password")
                return
        elif grant == "refresh_token":
            user = self.owner.user_for_refresh_token(form.get("refresh_token", [""])[0])
            if user is None:
                self._reject("POST", grant, None, raw_scopes, "invalid refresh token")
                return
        else:
            self.owner._record(
                TokenRequest(
                    method="POST", grant_type=grant, user=None, scopes=raw_scopes, status=400
                )
            )
            self._send(HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type"})
            return
        if not self._check_service(form, "POST", grant, user, raw_scopes):
            return
        scopes = self._parse_scopes(raw_scopes, "POST", grant, user)
        if scopes is None:
            return
        token, expires_in, issued_at = self.owner.issue(user, scopes)
        self.owner._record(
            TokenRequest(method="POST", grant_type=grant, user=user, scopes=raw_scopes, status=200)
        )
        body: dict[str, object] = {
            "access_token": token,
            "scope": " ".join(raw_scopes),
            "expires_in": expires_in,
            "issued_at": issued_at,
        }
        if grant == "refresh_token" or form.get("access_type", [""])[0] == "offline":
            body["refresh_token"] = self.owner.new_refresh_token(user)
        self._send(HTTPStatus.OK, body)

    # helpers -----------------------------------------------------------------------------
    def _check_service(
        self,
        params: Mapping[str, list[str]],
        method: str,
        grant: str,
        user: str | None,
        raw_scopes: tuple[str, ...],
    ) -> bool:
        service = params.get("service", [""])[0]
        if service and service != self.owner.service:
            self.owner._record(
                TokenRequest(
                    method=method, grant_type=grant, user=user, scopes=raw_scopes, status=400
                )
            )
            self._send(
                HTTPStatus.BAD_REQUEST,
                {"error": "invalid_request", "details": f"unknown service {service!r}"},
            )
            return False
        return True

    def _parse_scopes(
        self, raw_scopes: tuple[str, ...], method: str, grant: str, user: str | None
    ) -> list[Scope] | None:
        try:
            return [Scope.parse(s) for s in raw_scopes]
        except ValueError as e:
            self.owner._record(
                TokenRequest(
                    method=method, grant_type=grant, user=user, scopes=raw_scopes, status=400
                )
            )
            self._send(HTTPStatus.BAD_REQUEST, {"error": "invalid_scope", "details": str(e)})
            return None

    def _reject(
        self,
        method: str,
        grant: str,
        user: str | None,
        raw_scopes: tuple[str, ...],
        detail: str,
    ) -> None:
        self.owner._record(
            TokenRequest(method=method, grant_type=grant, user=user, scopes=raw_scopes, status=401)
        )
        self._send(
            HTTPStatus.UNAUTHORIZED,
            {"errors": [{"code": "UNAUTHORIZED", "message": detail}]},
            extra={"WWW-Authenticate": 'Basic realm="kitpin-test-token-issuer"'},
        )

    def _send(
        self, status: HTTPStatus, body: object, *, extra: Mapping[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
