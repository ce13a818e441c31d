"""The real CNCF distribution registry (``registry serve``) as a managed test process.

One :class:`RegistryServer` is one ``registry`` process on a free loopback port, with its own
generated config, filesystem storage and log under a work directory. Modes combine freely:

* plain HTTP (default) or TLS (``tls=True``): a throwaway ``trustme`` CA issues a certificate for
  ``127.0.0.1`` and ``localhost``; :attr:`RegistryServer.ca_file` is the CA PEM a client trusts
  (``RegistryHostConfig(ca_file=...)``);
* no auth (default), htpasswd Basic auth (``htpasswd={"user": "password"}``, bcrypt hashes), or
  token auth (``token=TokenAuth(...)``, usually ``TokenIssuer.registry_auth()``).

The access log is on (Apache combined format on stdout, one line per request), so tests count
requests *at the registry* with :meth:`RegistryServer.count_requests` instead of trusting the
client's own bookkeeping. The line is written when the handler returns, before Go flushes a
small response, so once a client has an answer its line is in the log; for anything else poll
with :meth:`RegistryServer.wait_for_requests`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness import procs, tools

STARTUP_TIMEOUT = 30.0
"""Seconds to wait for ``/v2/`` to answer; the binary starts in well under a second."""

_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<size>\d+|-)'
)


@dataclass(frozen=True, kw_only=True)
class TokenAuth:
    """The ``auth.token`` section: where clients get tokens and what the registry trusts."""

    realm: str
    """URL of the token endpoint (the issuer's ``/token``)."""
    service: str
    """Must equal the ``aud`` claim of the tokens."""
    issuer: str
    """Must equal the ``iss`` claim of the tokens."""
    rootcertbundle: Path
    """PEM bundle; a token's ``x5c`` chain must verify against it (distribution v3 also accepts a
    ``kid`` equal to the RFC 7638 thumbprint of one of these certificates' keys)."""


@dataclass(frozen=True, kw_only=True)
class AccessLogEntry:
    """One request as the registry's access log recorded it."""

    method: str
    path: str
    """The request path without the query string."""
    query: str
    status: int
    user: str
    """The authenticated user name, ``-`` when anonymous or not recorded."""


def _registry_binary() -> Path:
    return tools.find("registry")


class RegistryServer:
    """A real ``registry`` process; use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        name: str = "registry",
        tls: bool = False,
        htpasswd: Mapping[str, str] | None = None,
        token: TokenAuth | None = None,
        binary: Path | None = None,
    ) -> None:
        if htpasswd is not None and token is not None:
            raise ValueError("choose one auth mode: htpasswd or token")
        self.name = name
        self.tls = tls
        self.htpasswd = dict(htpasswd) if htpasswd is not None else None
        self.token = token
        self._binary = binary
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"kitpin-{name}-")) if workdir is None else workdir
        )
        self.port = 0
        self.ca_file: Path | None = None
        """PEM of the CA that signed the server certificate (TLS mode only)."""
        self._process: procs.Process | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()

    def start(self, *, timeout: float = STARTUP_TIMEOUT) -> RegistryServer:
        """Write the config, start the process, wait until ``/v2/`` answers."""
        if self._process is not None and self._process.alive():
            return self
        binary = self._binary or _registry_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls and self.ca_file is None:
            self._make_tls_files()
        # A restart keeps the port (clients keep their references). A new port is free when
        # chosen but another process may take it before the registry binds: then retry.
        last_error: procs.HarnessError | None = None
        for attempt in range(3):
            if attempt or not self.port:
                self.port = procs.free_port()
            config = self._write_config()
            env = dict(os.environ)
            env["OTEL_TRACES_EXPORTER"] = "none"  # no OTLP exporter dialling localhost:4318
            self._process = procs.Process(
                self.name,
                [str(binary), "serve", str(config)],
                log_dir=self.workdir,
                env=env,
                cwd=self.workdir,
            ).start()
            try:
                procs.wait_until(
                    self._ready,
                    timeout=timeout,
                    what=f"{self.name} to answer on {self.url}/v2/",
                    on_timeout=self.log_tail,
                )
                return self
            except procs.HarnessError as e:
                last_error = e
                self._process.stop()
                if "address already in use" not in self._process.log_tail(200):
                    break
        assert last_error is not None
        raise last_error

    def _ready(self) -> bool:
        assert self._process is not None
        self._process.check_alive()
        return procs.http_ok(
            f"{self.url}/v2/", ssl_context=self.client_ssl_context(), ok=(200, 401)
        )

    def stop(self) -> None:
        """Stop the process. Storage, config and log stay: ``start()`` again restarts the
        same registry on the same port with the same content (a registry restart)."""
        if self._process is not None:
            self._process.stop()

    def cleanup(self) -> None:
        """Remove the work directory if this object created it (``__exit__`` does this)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.ca_file = None

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting this registry's CA (``None`` for plain HTTP)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------------ logs

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 60) -> str:
        if self._process is None:
            return f"--- {self.name}: not started ---"
        return self._process.log_tail(lines)

    def requests(self) -> list[AccessLogEntry]:
        """Every request in the access log so far, oldest first."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        entries: list[AccessLogEntry] = []
        for line in text.splitlines():
            m = _ACCESS_LINE.match(line)
            if m is None:
                continue
            path, _, query = m["uri"].partition("?")
            entries.append(
                AccessLogEntry(
                    method=m["method"],
                    path=path,
                    query=query,
                    status=int(m["status"]),
                    user=m["user"],
                )
            )
        return entries

    def count_requests(self, method: str, path_regex: str, *, status: int | None = None) -> int:
        """How many ``method`` requests whose path (no query) fully matches ``path_regex``
        the registry has logged, optionally only those answered with ``status``."""
        pattern = re.compile(path_regex)
        return sum(
            1
            for e in self.requests()
            if e.method == method.upper()
            and pattern.fullmatch(e.path)
            and (status is None or e.status == status)
        )

    def count_manifest_requests(
        self, repository: str, reference: str, *, method: str = "GET", status: int | None = None
    ) -> int:
        """Requests for ``/v2/<repository>/manifests/<reference>`` (a tag or a digest)."""
        path = f"/v2/{re.escape(repository)}/manifests/{re.escape(reference)}"
        return self.count_requests(method, path, status=status)

    def wait_for_requests(
        self,
        method: str,
        path_regex: str,
        *,
        at_least: int,
        timeout: float = 10.0,
    ) -> int:
        """Poll the log until ``count_requests(method, path_regex) >= at_least``; the count."""
        procs.wait_until(
            lambda: self.count_requests(method, path_regex) >= at_least,
            timeout=timeout,
            what=f"{at_least} {method} {path_regex} in the {self.name} access log",
            on_timeout=self.log_tail,
        )
        return self.count_requests(method, path_regex)

    # ------------------------------------------------------------------ config

    def _make_tls_files(self) -> None:
        import trustme  # dev dependency; imported here so plain-HTTP users do not need it

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        tls_dir = self.workdir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca_file = tls_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(tls_dir / "server.key"))
        with open(tls_dir / "server.crt", "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())

    def _write_htpasswd(self) -> Path:
        import bcrypt  # dev dependency

        assert self.htpasswd is not None
        path = self.workdir / "htpasswd"
        lines = []
        for user, password in self.htpasswd.items():
            if ":" in user:
                raise ValueError(f"htpasswd user names cannot contain ':' ({user!r})")
            # Cost 4 is the minimum Go's bcrypt accepts; these are throwaway test secrets.
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            lines.append(f"{user}:{hashed}\n")
        path.write_text("".join(lines))
        return path

    def config(self) -> dict[str, object]:
        """The registry configuration this server runs with (JSON is valid YAML)."""
        http: dict[str, object] = {
            "addr": self.host,
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            tls_dir = self.workdir / "tls"
            http["tls"] = {
                "certificate": str(tls_dir / "server.crt"),
                "key": str(tls_dir / "server.key"),
            }
        config: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.htpasswd is not None:
            config["auth"] = {
                "htpasswd": {"realm": "kitpin-test-registry", "path": str(self._write_htpasswd())}
            }
        elif self.token is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "rootcertbundle": str(self.token.rootcertbundle),
                    "signingalgorithms": ["RS256"],
                }
            }
        return config

    def _write_config(self) -> Path:
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return path
