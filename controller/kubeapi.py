"""A minimal async Kubernetes API client: JSON GET, POST and PATCH on aiohttp.

kitpin needs four calls of the API (two reads of pull secrets, a status merge patch and an
Event), so it does without the official ``kubernetes`` client: importing that one costs ~19 MB
of resident memory (its ~1,000 model classes) and its calls block, so they ran in threads.
aiohttp is already there as kopf's transport.

Where to connect and how to authenticate is an :class:`Endpoint`: what kopf calls a
``kopf.ConnectionInfo`` (the operator gets one from kopf's own login functions and gives the
same to kopf), so the two clients always talk to the same apiserver as the same user.
:class:`KubeAPI` logs in again (``relogin``) when its login is older than ``refresh_after``
(a service account's projected token is rotated on disk by the kubelet) and on a 401.

Errors are exceptions a caller can act on: :class:`ApiError` when the apiserver answered with
an error status (by status: :class:`NotFoundError`, :class:`ForbiddenError`,
:class:`ConflictError`, ...), carrying the status, the reason and the API's own message;
:class:`UnreachableError` when there was no answer within the deadline.

This module imports no kopf and no ``kubernetes``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from controller import yamlload

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kitpin"
DEFAULT_TIMEOUT = 5.0


# -- errors ------------------------------------------------------------------------------


class KubeError(Exception):
    """A call of the Kubernetes API did not succeed."""


class UnreachableError(KubeError):
    """No answer: connection refused or reset, TLS failure, or no response within the
    deadline."""


class ApiError(KubeError):
    """The apiserver answered with an error status. ``reason`` is the API's machine-readable
    reason (``NotFound``, ``Forbidden``, ...) or else the HTTP reason phrase; ``message`` is
    the API's own explanation (a ``Status`` object's message)."""

    status_code: ClassVar[int | None] = None

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message
        text = f"{method} {path}: {status} {reason}"
        super().__init__(f"{text}: {message}" if message else text)


class BadRequestError(ApiError):
    status_code = 400


class UnauthorizedError(ApiError):
    status_code = 401


class ForbiddenError(ApiError):
    status_code = 403


class NotFoundError(ApiError):
    status_code = 404


class ConflictError(ApiError):
    status_code = 409


class InvalidError(ApiError):
    status_code = 422


_ERRORS: dict[int, type[ApiError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        InvalidError,
    )
    if cls.status_code is not None
}


def _error(method: str, path: str, status: int, http_reason: str, body: bytes) -> ApiError:
    reason, message = http_reason, ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, Mapping):  # a metav1.Status
        reason = str(doc.get("reason") or http_reason)
        message = str(doc.get("message") or "")
    elif body:
        message = body[:512].decode("utf-8", "replace").strip()
    return _ERRORS.get(status, ApiError)(method, path, status, reason, message)


# -- where and as whom -------------------------------------------------------------------

_PathLike = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class Endpoint(Protocol):
    """The fields of a ``kopf.ConnectionInfo`` this client uses (the same names and types)."""

    @property
    def server(self) -> str: ...
    @property
    def ca_path(self) -> _PathLike | None: ...
    @property
    def ca_data(self) -> str | bytes | None: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def scheme(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def certificate_path(self) -> _PathLike | None: ...
    @property
    def certificate_data(self) -> str | bytes | None: ...
    @property
    def private_key_path(self) -> _PathLike | None: ...
    @property
    def private_key_data(self) -> str | bytes | None: ...
    @property
    def proxy_url(self) -> str | None: ...
    @property
    def trust_env(self) -> bool: ...


def authorization(endpoint: Endpoint) -> str | None:
    """The ``Authorization`` header for ``endpoint`` (kopf's precedence: Basic when both a
    username and a password are set, else ``<scheme> <token>``, Bearer by default)."""
    if endpoint.username and endpoint.password:
        return aiohttp.encode_basic_auth(endpoint.username, endpoint.password)
    if endpoint.scheme and endpoint.token:
        return f"{endpoint.scheme} {endpoint.token}"
    if endpoint.scheme:
        return endpoint.scheme
    if endpoint.token:
        return f"Bearer {endpoint.token}"
    return None


def _pem(data: str | bytes) -> str:
    """PEM as given, or base64 of PEM (a kubeconfig's ``*-data`` fields)."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if text.lstrip().startswith("-----BEGIN "):
        return text
    return base64.b64decode(text, validate=False).decode("ascii")


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Verification against the endpoint's CA (file or data; the system's when neither), and
    its client certificate and key (files or data). ``ssl`` loads a certificate chain only
    from files: data are written to a private temporary directory (0700, files 0600) that is
    removed as soon as they are loaded."""
    context = ssl.create_default_context(
        cafile=endpoint.ca_path,
        cadata=_pem(endpoint.ca_data) if endpoint.ca_data else None,
    )
    cert, key = endpoint.certificate_path, endpoint.private_key_path
    cert_data, key_data = endpoint.certificate_data, endpoint.private_key_data
    if (cert or cert_data) and (key or key_data):
        with tempfile.TemporaryDirectory(prefix="kitpin-kubeapi-") as private:
            if cert is None and cert_data:
                cert = _private_file(Path(private, "client.crt"), _pem(cert_data))
            if key is None and key_data:
                key = _private_file(Path(private, "client.key"), _pem(key_data))
            assert cert is not None and key is not None
            context.load_cert_chain(certfile=cert, keyfile=key)
    elif cert or cert_data or key or key_data:
        raise ValueError("a client certificate needs both the certificate and its key")
    if endpoint.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    return path


def _transport(endpoint: Endpoint) -> tuple[Any, ...]:
    """What the session is built from; a new login that changes any of it needs a new
    session (a new token alone does not)."""
    return (
        endpoint.server,
        endpoint.ca_path,
        endpoint.ca_data,
        endpoint.insecure,
        endpoint.certificate_path,
        endpoint.certificate_data,
        endpoint.private_key_path,
        endpoint.private_key_data,
        endpoint.proxy_url,
        endpoint.trust_env,
    )


def path(*segments: str) -> str:
    """``/seg/seg/...`` with every segment percent-encoded (a ``/`` in a name stays inside
    its segment). Empty, ``.`` and ``..`` segments are refused: a name taken from an object
    must never address another path (another namespace)."""
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"{segment!r} is not a valid name in an API path")
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


# -- the kubeconfig ----------------------------------------------------------------------


def kubeconfig_auth_plugin(environ: Mapping[str, str] = os.environ) -> str | None:
    """``"exec"`` or ``"auth-provider"`` when the current kubeconfig user authenticates
    through a plugin (kopf's rudimentary login cannot run one), else None; None too when there
    is no kubeconfig or it cannot be read (the login then reports it). Files are merged as
    kubectl (and kopf) do: ``$KUBECONFIG`` (a path list), else ``~/.kube/config``; the first
    value of every name wins."""
    listed = environ.get("KUBECONFIG")
    default = Path("~/.kube/config").expanduser()
    if listed:
        paths = [Path(p.strip()).expanduser() for p in listed.split(os.pathsep) if p.strip()]
    else:
        paths = [default] if default.exists() else []
    current: str | None = None
    contexts: dict[str, Any] = {}
    users: dict[str, Any] = {}
    try:
        for file in paths:
            config = yamlload.load_file(file, duplicate_keys=True) or {}
            if not isinstance(config, Mapping):
                continue
            if current is None and isinstance(config.get("current-context"), str):
                current = config["current-context"]
            for key, merged in (("contexts", contexts), ("users", users)):
                for item in config.get(key) or ():
                    if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                        merged.setdefault(item["name"], item.get(key[:-1]) or {})
    except (OSError, yamlload.LoadError):
        return None
    context = contexts.get(current or "")
    user = users.get(str(context.get("user"))) if isinstance(context, Mapping) else None
    if not isinstance(user, Mapping):
        return None
    if user.get("exec"):
        return "exec"
    if user.get("auth-provider"):
        return "auth-provider"
    return None


@contextlib.contextmanager
def kubernetes_client_hidden() -> Iterator[None]:
    """Make the official ``kubernetes`` package unimportable for the duration, unless it is
    imported already.

    ``import kopf`` imports ``kubernetes.client`` (~19 MB resident: its model classes)
    whenever the package is installed, only to recognise its objects should a handler pass
    kopf one; kitpin never does. Wrap ``import kopf`` in this and kopf takes its fallbacks
    instead. Afterwards the package is importable again (the kubeconfig exec-plugin login
    needs it)."""
    if "kubernetes" in sys.modules:
        yield
        return
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if "kubernetes" in sys.modules and sys.modules["kubernetes"] is None:
            del sys.modules["kubernetes"]


# -- the client --------------------------------------------------------------------------

E = TypeVar("E", bound=Endpoint)


class KubeAPI(Generic[E]):
    """JSON over HTTPS to one apiserver, one shared :class:`aiohttp.ClientSession`.

    ``relogin`` (blocking; run in a thread) gives a fresh endpoint: called when the current
    one is older than ``refresh_after`` seconds (None: never for age alone) and once on a 401,
    after which the request is retried once. Every call has a deadline (``timeout``, or the
    default given here) covering the whole exchange."""

    def __init__(
        self,
        endpoint: E,
        *,
        relogin: Callable[[], E] | None = None,
        refresh_after: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self._relogin = relogin
        self._refresh_after = refresh_after
        self._timeout = timeout
        self._limit = limit
        self._clock = clock
        self._logged_in_at = clock()
        self._generation = 0
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._session_for: tuple[Any, ...] | None = None
        self._retired: list[aiohttp.ClientSession] = []

    @property
    def endpoint(self) -> E:
        return self._endpoint

    async def __aenter__(self) -> KubeAPI[E]:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        sessions = [*self._retired, *([self._session] if self._session else [])]
        self._session, self._retired = None, []
        for session in sessions:
            await session.close()

    # -- login ---------------------------------------------------------------------------

    async def relogin(self) -> E:
        """Log in again now (kopf's login handler calls this when kopf needs credentials);
        the new endpoint serves the next requests. Without ``relogin``, the current one."""
        generation = self._generation
        async with self._lock:
            if self._generation == generation:  # nobody did it while we waited
                await self._do_relogin()
            return self._endpoint

    async def _do_relogin(self) -> None:
        if self._relogin is None:
            return
        self._endpoint = await asyncio.to_thread(self._relogin)
        self._logged_in_at = self._clock()
        self._generation += 1
        logger.debug("logged in again to %s", self._endpoint.server)

    async def _try_relogin(self) -> bool:
        """:meth:`_do_relogin` (hold the lock) for a request: a login that fails keeps the
        current one (a rotated token stays valid for a while), logged, and is tried again a
        period later."""
        try:
            await self._do_relogin()
        except Exception as e:
            self._logged_in_at = self._clock()
            logger.warning("logging in again to %s failed: %s", self._endpoint.server, e)
            return False
        return True

    async def _fresh(self) -> None:
        if self._refresh_after is None or self._relogin is None:
            return
        if self._clock() - self._logged_in_at < self._refresh_after:
            return
        async with self._lock:
            if self._clock() - self._logged_in_at >= self._refresh_after:
                await self._try_relogin()

    async def _session_now(self) -> aiohttp.ClientSession:
        wanted = _transport(self._endpoint)
        session = self._session
        if session is not None and self._session_for == wanted:
            return session
        # A new session (the first, or a login changed the TLS material or the proxy). The
        # state changes before any await, so concurrent requests agree on one session.
        # In-flight requests finish on the old one; it is closed at the next change (a whole
        # login period later) or by close().
        retired = self._retired
        self._retired = [session] if session is not None else []
        session = self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=ssl_context(self._endpoint)),
            proxy=self._endpoint.proxy_url,
            trust_env=self._endpoint.trust_env,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self._session_for = wanted
        for old in retired:
            await old.close()
        return session

    # -- calls ---------------------------------------------------------------------------

    async def get(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        return await self.request("GET", path, timeout=timeout)

    async def post(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        return await self.request("POST", path, body=body, timeout=timeout)

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", path, body=body, content_type=content_type, timeout=timeout
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """``method`` on ``path`` (already encoded, see :func:`path`), the JSON object
        answered ({} for an empty body). Raises :class:`ApiError` (by status) or
        :class:`UnreachableError`."""
        deadline = self._timeout if timeout is None else timeout
        data = None if body is None else json.dumps(body).encode()
        try:
            async with asyncio.timeout(deadline):
                await self._fresh()
                generation = self._generation
                try:
                    return await self._once(method, path, data, content_type)
                except UnauthorizedError:
                    if self._relogin is None:
                        raise
                    async with self._lock:
                        if self._generation == generation:  # not refreshed meanwhile
                            if not await self._try_relogin():
                                raise
                    return await self._once(method, path, data, content_type)
        except TimeoutError as e:
            raise UnreachableError(
                f"{method} {path}: no answer from {self._endpoint.server} within {deadline:g}s"
            ) from e

    async def _once(
        self, method: str, path: str, data: bytes | None, content_type: str
    ) -> dict[str, Any]:
        endpoint = self._endpoint
        headers = {"Content-Type": content_type} if data is not None else {}
        auth = authorization(endpoint)
        if auth:
            headers["Authorization"] = auth
        url = URL(endpoint.server.rstrip("/") + path, encoded=True)
        session = await self._session_now()  # a TLS misconfiguration raises here (ssl/OSError)
        try:
            async with session.request(method, url, data=data, headers=headers) as response:
                raw = await response.read()
                status, http_reason = response.status, response.reason or ""
        except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
            raise UnreachableError(f"{method} {path}: {endpoint.server}: {e}") from e
        if status >= 400:
            raise _error(method, path, status, http_reason, raw)
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError as e:
            raise ApiError(method, path, status, "NotJSON", f"answer is not JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise ApiError(method, path, status, "NotAnObject", "answer is not a JSON object")
        return parsed
