"""The OCI distribution client: fetch a manifest (and a config blob), verify the bytes
locally, and turn every failure into an :mod:`controller.errors` ``RegistryError``.

Requests are built by pure functions (:func:`build_manifest_request`,
:func:`build_blob_request`, :func:`build_ping_request`, :func:`build_redirect_request`, and the
token requests of :mod:`.auth`); :meth:`RegistryClient._send` is the only place that sends.
Before sending it checks the host against the :class:`~controller.registry.hosts.HostPolicy`
(the name, then its DNS answers), picks the ``httpx.AsyncClient`` for the host's TLS settings
(one per distinct CA bundle, created lazily and reused for connection pooling), and maps
transport errors. By default those clients send through
:class:`~controller.registry.transport.AiohttpTransport` (httpx's own transport behind a
proxy from the environment), whose connections go only to addresses that pass the host policy.

Before the first request to an endpoint whose auth challenge is unknown, the client sends the
API version check ``GET /v2/`` once (one in flight per endpoint, however many requests wait
for it), anonymous and not following redirects, to learn the challenge so the real request
carries Basic or a Bearer token from the start (see :mod:`.auth`). The check never fails a
request: whatever it meets (``404``, ``5xx``, a timeout, a refused host), the real request
goes as it would have without it and meets the same problem with its usual message. What it
found is remembered: a challenge or a ``200`` for good, anything else for
:data:`PING_RETRY_SECONDS`.

Token requests are single-flight too: one in flight per token-cache key (realm, service,
scope, credential identity, :class:`~controller.registry.auth.TokenKey`), so concurrent first
requests for one repository (tags ``v1`` and ``v2`` resolved at the same time) cost one token
request. Every request waiting for it gets the token, or the failure mapped into its own
context (subject, registry, repository, credential source); a failure is not remembered once
the fetch is over. A caller leaving (its deadline) leaves the fetch to the others; the fetch
as a whole is bounded by :data:`TOKEN_DEADLINE_SECONDS`. Different credentials make different
keys: a token fetched with one credential never serves another.

Redirects are followed here, at most :data:`MAX_REDIRECTS`, each target checked like the
first host; ``Authorization`` goes only to the origin that asked for it. Bodies are streamed
with a hard size cap. A manifest's digest is the sha256 of the exact bytes received, checked
against ``Docker-Content-Digest`` and against the digest the reference carried.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import hashlib
import ipaddress
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

import httpx

from controller import artifacts, errors, refs, types
from controller.flights import Flights
from controller.registry import auth, hosts
from controller.registry.transport import AiohttpTransport, environment_has_proxy

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "PING_RETRY_SECONDS",
    "ClientFactory",
    "RegistryClient",
    "RequestKind",
    "Resolve",
    "build_blob_request",
    "build_manifest_request",
    "build_ping_request",
    "build_redirect_request",
    "endpoint_for",
    "parse_retry_after",
    "system_resolve",
    "verify_digest",
]

logger = logging.getLogger(__name__)

MiB: Final = 1024 * 1024
DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * MiB
DEFAULT_MAX_CONFIG_BYTES: Final = 1 * MiB
MAX_TOKEN_BYTES: Final = 1 * MiB
"""Token responses carry a JWT or two; anything bigger is not a token."""
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
"""Of an error answer only the start is read, for its OCI error codes and message."""
MAX_REDIRECTS: Final = 3
DNS_OK_SECONDS: Final = 30.0
"""How long a host whose DNS answers passed the host policy is not looked up again."""
PING_RETRY_SECONDS: Final = 300.0
"""How long an API version check (``GET /v2/``) that taught nothing (``404``, ``5xx``, a
redirect, a network error, a ``401`` without a usable challenge) is not repeated."""
PING_DEADLINE_SECONDS: Final = 5.0
"""The API version check as a whole (each of its phases is also bounded by the client's
timeout): a registry that hangs on ``/v2/`` does not hold the requests waiting for it longer."""
TOKEN_DEADLINE_SECONDS: Final = 10.0
"""A token request as a whole (with its fallback and redirects; each phase is also bounded by
the client's timeout). The requests that wait for it leave at their own deadlines, but it
runs on for the others, and later requests for the same token join it: a realm that hangs
or trickles its answer does not hold them longer."""
MAX_PING_BYTES: Final = 4 * 1024
"""Of the answer to ``GET /v2/`` only the start is read (its body means nothing to kitpin)."""
_MAX_REMEMBERED_ENDPOINTS: Final = 1024

DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=3.0)
"""Per request phase. A backstop: the resolver's deadline bounds a whole resolution."""

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_ENDPOINT: Final = "registry-1.docker.io"

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_NOT_FOUND_CODES: Final = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_DIGEST: Final = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_VERIFIABLE: Final = frozenset({"sha256", "sha384", "sha512"})

RequestKind = Literal["manifest", "token", "blob", "ping"]
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""``resolve(host, port)`` → the IP addresses the name resolves to; raises ``OSError``."""
ClientFactory = Callable[[ssl.SSLContext], httpx.AsyncClient]
"""Makes the ``httpx.AsyncClient`` for one TLS configuration."""

_SENDING: Final = contextvars.ContextVar[hosts.Purpose](
    "kitpin_registry_sending", default="registry endpoint"
)
"""Why the request :meth:`RegistryClient._send` is sending contacts its host: the purpose the
host policy names when it refuses an address a connection resolves to."""


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, from the system resolver (off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# -- building requests (pure) -------------------------------------------------------------------


def endpoint_for(registry: str) -> str:
    """The ``host[:port]`` that serves ``registry``'s API: Docker Hub is
    ``registry-1.docker.io``."""
    return DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry


def _base_headers(accept: str, authorization: str | None) -> dict[str, str]:
    headers = {"Accept": accept, "Accept-Encoding": "identity", "User-Agent": auth.USER_AGENT}
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


def build_manifest_request(
    policy: hosts.HostPolicy, ref: refs.Reference, *, authorization: str | None = None
) -> httpx.Request:
    """``GET /v2/<repository>/manifests/<digest or tag>`` accepting OCI and Docker manifests
    and indexes."""
    scheme = policy.scheme_for(ref.registry)
    url = (
        f"{scheme}://{endpoint_for(ref.registry)}/v2/{ref.repository}"
        f"/manifests/{ref.digest or ref.tag}"
    )
    accept = ", ".join(artifacts.ACCEPTED_MEDIA_TYPES)
    return httpx.Request("GET", url, headers=_base_headers(accept, authorization))


def build_blob_request(
    policy: hosts.HostPolicy,
    ref: refs.Reference,
    digest: str,
    *,
    authorization: str | None = None,
) -> httpx.Request:
    """``GET /v2/<repository>/blobs/<digest>``."""
    scheme = policy.scheme_for(ref.registry)
    url = f"{scheme}://{endpoint_for(ref.registry)}/v2/{ref.repository}/blobs/{digest}"
    return httpx.Request("GET", url, headers=_base_headers("*/*", authorization))


def build_ping_request(url: httpx.URL) -> httpx.Request:
    """``GET /v2/`` (the API version check) of ``url``'s endpoint: same scheme, host and port,
    never an ``Authorization``."""
    ping = httpx.URL(scheme=url.scheme, host=url.host, port=url.port, path="/v2/")
    return httpx.Request("GET", ping, headers=_base_headers("application/json", None))


def build_redirect_request(
    previous: httpx.Request, location: str | None, *, policy: hosts.HostPolicy, registry: str
) -> httpx.Request:
    """The request that follows a redirect to ``location``: same method and headers, minus
    ``Authorization`` when the origin changes. Refuses (``HostNotAllowedError``) a target that
    is not https, unless its host is configured plain HTTP, and one the host policy denies."""
    if not location:
        raise errors.BadResponseError(
            f"{registry} answered a redirect without a Location; the registry is misbehaving",
            registry=registry,
        )
    try:
        target = previous.url.join(location)
    except httpx.InvalidURL as e:
        raise errors.BadResponseError(
            f"{registry} redirected to something that is not a URL; the registry is misbehaving",
            registry=registry,
        ) from e
    host_port = hosts.join_host_port(target.host, target.port)
    if target.scheme == "http":
        if not policy.allows_plain_http(target.host, target.port or 80):
            raise errors.HostNotAllowedError(
                f"{registry} redirected to http://{host_port}, over plain HTTP; kitpin follows "
                f"plain-HTTP redirects only to hosts configured plainHTTP in the registry config",
                registry=registry,
            )
    elif target.scheme != "https" or not target.host:
        raise errors.HostNotAllowedError(
            f"{registry} redirected to a {target.scheme or 'relative'} URL; kitpin follows "
            "https redirects only",
            registry=registry,
        )
    policy.check(host_port, purpose="redirect")
    headers = httpx.Headers(previous.headers)
    headers["Host"] = target.netloc.decode("ascii")
    if _origin(target) != _origin(previous.url):
        headers.pop("Authorization", None)
    return httpx.Request(previous.method, target, headers=headers)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _host_port(url: httpx.URL) -> str:
    """``host:port`` of a URL, the port always explicit (httpx drops default ports)."""
    return hosts.join_host_port(url.host, url.port or (443 if url.scheme == "https" else 80))


# -- reading answers (pure) ---------------------------------------------------------------------


def verify_digest(
    body: bytes,
    *,
    claimed: str | None,
    expected: str | None,
    subject: str,
    registry: str,
    repository: str,
) -> str:
    """``sha256:<hex>`` of ``body``. Raises :class:`errors.DigestMismatchError` when the
    registry's ``Docker-Content-Digest`` (``claimed``) or the digest the reference carried
    (``expected``) disagrees with the bytes."""
    computed = "sha256:" + hashlib.sha256(body).hexdigest()
    for said, who in ((claimed, "the registry claimed"), (expected, "the reference asked for")):
        if not said:
            continue
        said = said.strip()
        algorithm, _, _hex = said.partition(":")
        if algorithm == "sha256":
            actual = computed
        elif algorithm in _VERIFIABLE:
            actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
        else:
            logger.debug("%s: cannot verify digest algorithm %r; ignored", subject, algorithm)
            continue
        if said != actual:
            raise errors.DigestMismatchError(
                f"{subject}: {who} {said}, but the bytes received hash to {actual}; nothing "
                "was pinned. The registry, or something between kitpin and it (a proxy, a "
                "cache), is serving content that does not match its digest",
                registry=registry,
                repository=repository,
            )
    return computed


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - now)


def _oci_errors(body: bytes) -> tuple[frozenset[str], str]:
    """The OCI error codes in an error body and a short, single-line message for humans."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return frozenset(), ""
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return frozenset(), ""
    codes: set[str] = set()
    messages: list[str] = []
    for item in document["errors"]:
        if not isinstance(item, dict):
            continue
        code, message = item.get("code"), item.get("message")
        if isinstance(code, str):
            codes.add(code.upper())
        if isinstance(message, str) and message:
            messages.append(" ".join(message.split()))
    text = "; ".join(messages)
    return frozenset(codes), (text[:200] + "…" if len(text) > 200 else text)


def _json_object(body: bytes, *, subject: str, registry: str, repository: str) -> dict[str, object]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.BadResponseError(
            f"{subject} is not valid JSON ({e.__class__.__name__}); the registry served "
            "something else than a manifest or config",
            registry=registry,
            repository=repository,
        ) from e
    if not isinstance(document, dict):
        raise errors.BadResponseError(
            f"{subject} is JSON but not an object; the registry served something else than a "
            "manifest or config",
            registry=registry,
            repository=repository,
        )
    return document


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _tls_verification_failed(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(e)


# -- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Target:
    """What a request is for: the registry a reference names and the repository in it."""

    registry: str
    repository: str
    subject: str
    """How messages name the thing fetched: ``manifest docker.io/library/x:1``."""


@dataclass(frozen=True, kw_only=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL
    redirected: bool


@dataclass(frozen=True, kw_only=True)
class _SendFailed:
    """A token request that got no answer to read (transport, host policy, redirect, size):
    ``error`` as raised for ``origin``, the request that started the fetch."""

    error: errors.RegistryError
    origin: _Target


@dataclass(frozen=True, kw_only=True)
class _NoToken:
    """A token endpoint's success without a usable token (no registry fields yet)."""

    error: errors.BadResponseError


_TokenOutcome = str | _Answer | _SendFailed | _NoToken
"""What one token fetch came to, for each request waiting for it to take in its own context:
the ``Authorization`` value (the token is cached), the realm's answer when it was no success,
or a failure."""


def _moved(e: errors.RegistryError, origin: _Target, target: _Target) -> errors.RegistryError:
    """``e``, raised for ``origin``, as if raised for ``target``: the subject its message
    starts with, and its registry and repository, are ``target``'s."""
    prefix = f"{origin.subject}: "
    message = e.message
    if message.startswith(prefix):
        message = f"{target.subject}: {message.removeprefix(prefix)}"
    again = type(e)(message)
    again.registry, again.repository = target.registry, target.repository
    if isinstance(e, errors.RateLimitedError) and isinstance(again, errors.RateLimitedError):
        again.retry_after = e.retry_after
    return again


def _in_context(e: errors.RegistryError, target: _Target) -> errors.RegistryError:
    """``e`` again, its message prefixed with what was being fetched, and the registry and
    repository of the reference filled in (pure helpers raise without them)."""
    again = type(e)(f"{target.subject}: {e.message}")
    again.registry, again.repository = target.registry, target.repository
    if isinstance(e, errors.RateLimitedError) and isinstance(again, errors.RateLimitedError):
        again.retry_after = e.retry_after
    return again


class RegistryClient:
    """Async OCI distribution client. One per process: it pools connections and caches
    tokens. Use it as an async context manager, or call :meth:`aclose`."""

    def __init__(
        self,
        policy: hosts.HostPolicy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        client_factory: ClientFactory | None = None,
        max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
        max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        resolve: Resolve = system_resolve,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[str, RequestKind], None] | None = None,
    ) -> None:
        """``policy``: the host policy (default: :class:`HostPolicy` defaults).
        ``transport``: send everything through this transport (tests: ``httpx.MockTransport``);
        ``client_factory``: or make each ``AsyncClient`` from its ``ssl.SSLContext``.
        ``resolve``: the DNS lookup whose answers the host policy checks.
        ``clock``: wall clock for token expiry and ``Retry-After`` dates.
        ``on_request(registry, kind)``: called for every HTTP request sent (metrics); the API
        version check is kind ``ping``."""
        if transport is not None and client_factory is not None:
            raise ValueError("pass transport or client_factory, not both")
        self._policy = policy if policy is not None else hosts.HostPolicy()
        self._max_manifest_bytes = max_manifest_bytes
        self._max_config_bytes = max_config_bytes
        self._timeout = timeout
        self._transport = transport
        self._client_factory = client_factory
        self._resolve = resolve
        self._clock = clock
        self._on_request = on_request
        self._auth = auth.Authenticator(policy=self._policy, clock=clock)
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._dns_ok: dict[str, float] = {}
        self._pinged: dict[str, float] = {}
        """Endpoint key → until when (:attr:`_clock`) its ``/v2/`` need not be asked again."""
        self._pings: Flights[str, None] = Flights()
        """Endpoint key → the API version check in flight."""
        self._token_fetches: Flights[auth.TokenKey, _TokenOutcome] = Flights()
        """Token-cache key → the token request in flight for it."""

    @property
    def policy(self) -> hosts.HostPolicy:
        return self._policy

    @property
    def tokens(self) -> auth.TokenCache:
        return self._auth.tokens

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the API version checks and token requests in flight (requests waiting for a
        token get a :class:`errors.RegistryError`), then close the connection pools."""
        await self._pings.cancel_all()
        await self._token_fetches.cancel_all()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # -- public API --------------------------------------------------------------------------

    async def get_manifest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> types.Manifest:
        """Fetch and verify the manifest ``ref`` names (its digest if it carries one, else its
        tag). The returned digest is computed from the bytes received. Raises only
        :class:`errors.RegistryError` subclasses."""
        target = _Target(
            registry=ref.registry, repository=ref.repository, subject=f"manifest {ref.canonical}"
        )
        self._check_registry(target)
        if ref.digest is not None and not _DIGEST.match(ref.digest):
            raise errors.BadResponseError(
                f"{target.subject}: {ref.digest!r} is not a sha256/sha512 digest",
                registry=target.registry,
                repository=target.repository,
            )
        answer = await self._get(
            lambda authorization: build_manifest_request(
                self._policy, ref, authorization=authorization
            ),
            target=target,
            credential=credential,
            kind="manifest",
            limit=self._max_manifest_bytes,
        )
        digest = verify_digest(
            answer.body,
            claimed=answer.headers.get("docker-content-digest"),
            expected=ref.digest,
            subject=target.subject,
            registry=target.registry,
            repository=target.repository,
        )
        document = _json_object(
            answer.body,
            subject=target.subject,
            registry=target.registry,
            repository=target.repository,
        )
        content_type = answer.headers.get("content-type", "").partition(";")[0].strip()
        try:
            return artifacts.parse_manifest(
                document, digest=digest, content_type=content_type, size=len(answer.body)
            )
        except errors.RegistryError as e:
            if e.registry:
                raise
            raise errors.BadResponseError(
                f"{target.subject}: {e.message}",
                registry=target.registry,
                repository=target.repository,
            ) from e

    async def get_config(
        self,
        ref: refs.Reference,
        manifest: types.Manifest,
        *,
        credential: types.Credential | None = None,
    ) -> Mapping[str, object]:
        """Fetch ``manifest``'s config blob (following a redirect to blob storage), verify it
        hashes to the config digest, and return it as a JSON object."""
        target = _Target(
            registry=ref.registry,
            repository=ref.repository,
            subject=f"config blob of {ref.canonical}",
        )
        self._check_registry(target)
        digest = manifest.config_digest
        if digest is None:
            raise errors.BadResponseError(
                f"{target.subject}: the manifest ({manifest.format}, {manifest.media_type}) has "
                "no config; it is not a single-artifact manifest",
                registry=target.registry,
                repository=target.repository,
            )
        if not _DIGEST.match(digest):
            raise errors.BadResponseError(
                f"{target.subject}: config digest {digest!r} is not a sha256/sha512 digest; "
                "the manifest is malformed",
                registry=target.registry,
                repository=target.repository,
            )
        if manifest.config_size is not None and manifest.config_size > self._max_config_bytes:
            raise errors.ManifestTooLargeError(
                f"{target.subject}: the manifest declares {manifest.config_size} bytes, more "
                f"than the {self._max_config_bytes}-byte limit for config blobs; a Kitfile is "
                "a few KiB, so this is not read",
                registry=target.registry,
                repository=target.repository,
            )
        answer = await self._get(
            lambda authorization: build_blob_request(
                self._policy, ref, digest, authorization=authorization
            ),
            target=target,
            credential=credential,
            kind="blob",
            limit=self._max_config_bytes,
        )
        verify_digest(
            answer.body,
            claimed=answer.headers.get("docker-content-digest"),
            expected=digest,
            subject=target.subject,
            registry=target.registry,
            repository=target.repository,
        )
        return _json_object(
            answer.body,
            subject=target.subject,
            registry=target.registry,
            repository=target.repository,
        )

    # -- the request cycle -------------------------------------------------------------------

    def _check_registry(self, target: _Target) -> None:
        try:
            self._policy.check(target.registry, purpose="registry")
        except errors.HostNotAllowedError as e:
            raise errors.HostNotAllowedError(
                e.message, registry=target.registry, repository=target.repository
            ) from e

    async def _get(
        self,
        build: Callable[[str | None], httpx.Request],
        *,
        target: _Target,
        credential: types.Credential | None,
        kind: RequestKind,
        limit: int,
    ) -> _Answer:
        """Send ``build(authorization)``: up front with what the endpoint's known challenge
        asks for (learnt by the API version check when unknown yet), again after a 401 with
        what its challenge asks for; map the final status."""
        url = build(None).url
        await self._ping_once(url, target=target)
        try:
            plan = self._auth.plan(url=url, repository=target.repository, credential=credential)
        except errors.RegistryError as e:
            raise _in_context(e, target) from e
        sent = await self._authorization(plan, target=target)
        # A token this request waited for counts as fetched for it, whether its own fetch or
        # one in flight that it joined: either was issued after this request found none.
        fresh = plan.key if isinstance(plan, auth.TokenFetch) else None
        answer = await self._exchange(
            build(sent), purpose="registry endpoint", target=target, kind=kind, limit=limit
        )
        if answer.status == 401 and not answer.redirected:
            try:
                plan = self._auth.on_challenge(
                    url=url,
                    repository=target.repository,
                    credential=credential,
                    www_authenticate=answer.headers.get_list("www-authenticate"),
                    registry=target.registry,
                    refused=sent,
                )
            except errors.RegistryError as e:
                raise _in_context(e, target) from e
            if isinstance(plan, auth.TokenFetch) and plan.key == fresh:
                # The token refused was fetched just now for this very realm, service, scope
                # and credential: another one would be refused alike (the Bearer analogue of
                # the Basic value that is not sent twice below). The 401 stands.
                plan = None
            retry = await self._authorization(plan, target=target)
            if retry is not None and retry != sent:
                answer = await self._exchange(
                    build(retry), purpose="registry endpoint", target=target, kind=kind, limit=limit
                )
        if not 200 <= answer.status < 300:
            raise self._status_error(answer, target=target, credential=credential)
        return answer

    async def _ping_once(self, url: httpx.URL, *, target: _Target) -> None:
        """The API version check of ``url``'s endpoint, when its challenge is unknown and it
        was not checked (recently): one task per endpoint, joined by every request that comes
        while it runs. Waiting does not cancel it (another request may still want it); it
        never raises."""
        if self._auth.knows(url):
            return
        key = auth.endpoint_key(url)
        until = self._pinged.get(key)
        if until is not None and until > self._clock():
            return
        # The task's end (even its cancellation by aclose) is not the caller's, and the
        # caller's cancellation (its deadline) leaves the task to the others.
        await self._pings.join(
            key, lambda: self._ping(url, key=key, target=target), name=f"kitpin-ping {key}"
        )

    async def _ping(self, url: httpx.URL, *, key: str, target: _Target) -> None:
        """Send ``GET /v2/`` and learn from the answer; remember the outcome. Goes through
        :meth:`_send` like every request (host policy and DNS, TLS settings, timeouts,
        ``on_request`` with kind ``ping``) and never follows a redirect."""
        ping = _Target(
            registry=target.registry,
            repository=target.repository,
            subject=f"API version check of {key}",
        )
        request = build_ping_request(url)
        try:
            async with asyncio.timeout(PING_DEADLINE_SECONDS):
                response = await self._send(
                    request, purpose="registry endpoint", target=ping, kind="ping"
                )
                try:
                    await self._read(response, limit=MAX_PING_BYTES, strict=False, target=ping)
                finally:
                    await response.aclose()
        except TimeoutError:
            logger.debug(
                "%s took over %.0f s; the request goes without it",
                ping.subject,
                PING_DEADLINE_SECONDS,
            )
            self._remember_ping(key, settled=False)
            return
        except errors.RegistryError as e:
            logger.debug("%s failed, the request goes without it: %s", ping.subject, e)
            self._remember_ping(key, settled=False)
            return
        except Exception:  # the check must never fail a request; log what it hit
            logger.debug("%s failed, the request goes without it", ping.subject, exc_info=True)
            self._remember_ping(key, settled=False)
            return
        status = response.status_code
        if status == 401:
            learnt = self._auth.learn(
                url=url, www_authenticate=response.headers.get_list("www-authenticate")
            )
        else:
            learnt = 200 <= status < 300
        logger.debug("%s: %s%s", ping.subject, status, "" if learnt else " (nothing learnt)")
        self._remember_ping(key, settled=learnt)

    def _remember_ping(self, key: str, *, settled: bool) -> None:
        if len(self._pinged) >= _MAX_REMEMBERED_ENDPOINTS and key not in self._pinged:
            self._pinged.clear()
        self._pinged[key] = math.inf if settled else self._clock() + PING_RETRY_SECONDS

    async def _authorization(self, plan: auth.Plan, *, target: _Target) -> str | None:
        """The ``Authorization`` value for ``plan``, fetching a token if it says so: one token
        request in flight per token-cache key, joined by every request that needs the same
        token while it runs. Waiting does not cancel it (another request may still want it);
        its outcome is mapped into each waiter's own context."""
        if plan is None or isinstance(plan, str):
            return plan
        fetch = plan
        if self._token_fetches.in_flight(fetch.key):
            logger.debug("%s: joins the token request in flight", target.subject)
        # The caller's cancellation (its deadline) leaves the fetch to the others, and the
        # fetch's cancellation (aclose) is not the caller's.
        task = await self._token_fetches.join(
            fetch.key,
            lambda: self._fetch_token(fetch, target=target),
            name=f"kitpin-token {_host_port(fetch.request.url)}",
        )
        if task.cancelled():
            raise errors.RegistryError(
                f"{target.subject}: the token request to {_host_port(fetch.request.url)} was "
                "abandoned because the registry client is closing (shutdown); try again",
                registry=target.registry,
                repository=target.repository,
            )
        return self._token_authorization(task.result(), fetch=fetch, target=target)

    async def _fetch_token(self, fetch: auth.TokenFetch, *, target: _Target) -> _TokenOutcome:
        """Send ``fetch``'s token request (and its fallback); cache the token issued. Errors
        are returned, not raised: every waiter maps them into its own context
        (:meth:`_token_authorization`). ``target`` is the request that started the fetch.
        At most :data:`TOKEN_DEADLINE_SECONDS`."""
        try:
            async with asyncio.timeout(TOKEN_DEADLINE_SECONDS):
                answer = await self._exchange(
                    fetch.request,
                    purpose="token realm",
                    target=target,
                    kind="token",
                    limit=MAX_TOKEN_BYTES,
                )
                if answer.status in (404, 405) and fetch.fallback is not None:
                    logger.debug(
                        "token realm of %s refused the refresh-token POST; GET", target.registry
                    )
                    answer = await self._exchange(
                        fetch.fallback,
                        purpose="token realm",
                        target=target,
                        kind="token",
                        limit=MAX_TOKEN_BYTES,
                    )
        except errors.RegistryError as e:
            return _SendFailed(error=e, origin=target)
        except TimeoutError:
            timeout = errors.RegistryTimeoutError(
                f"{target.subject}: the token service {_host_port(fetch.request.url)} of "
                f"{target.registry} gave no token within {TOKEN_DEADLINE_SECONDS:.0f} s; it "
                "is slow or unreachable, try again",
                registry=target.registry,
                repository=target.repository,
            )
            return _SendFailed(error=timeout, origin=target)
        if not 200 <= answer.status < 300:
            return answer
        try:
            return self._auth.token_received(fetch, answer.body)
        except errors.BadResponseError as e:
            return _NoToken(error=e)

    def _token_authorization(
        self, outcome: _TokenOutcome, *, fetch: auth.TokenFetch, target: _Target
    ) -> str:
        """The ``Authorization`` value from a token fetch's outcome, or its failure as an
        error about ``target``, naming ``fetch``'s credential (the waiter's own: the same
        credential identity may come from several sources)."""
        if isinstance(outcome, str):
            return outcome
        if isinstance(outcome, _SendFailed):
            raise _moved(outcome.error, outcome.origin, target) from outcome.error
        realm = _host_port(fetch.request.url)
        if isinstance(outcome, _NoToken):
            raise errors.BadResponseError(
                f"{target.registry}: token service {realm}: {outcome.error.message}",
                registry=target.registry,
                repository=target.repository,
            ) from outcome.error
        answer = outcome
        if answer.status == 401:
            raise errors.UnauthorizedError(
                f"{target.subject}: the token service {realm} of {target.registry} rejected "
                f"{fetch.credential_description} (401); check the credentials for "
                f"{target.registry}, or add a pull secret for it to the namespace",
                registry=target.registry,
                repository=target.repository,
            )
        if answer.status == 403:
            raise errors.ForbiddenError(
                f"{target.subject}: the token service {realm} of {target.registry} refused "
                f"a token for {target.repository} to {fetch.credential_description} (403); "
                "grant that "
                f"credential pull access to {target.repository}, or use one that has it",
                registry=target.registry,
                repository=target.repository,
            )
        raise self._status_error(
            answer,
            target=_Target(
                registry=target.registry,
                repository=target.repository,
                subject=f"token for {target.repository} from {realm}",
            ),
            credential=None,
        )

    async def _exchange(
        self,
        request: httpx.Request,
        *,
        purpose: hosts.Purpose,
        target: _Target,
        kind: RequestKind,
        limit: int,
    ) -> _Answer:
        """Send ``request``, following redirects of GETs, and read the final body: at most
        ``limit`` bytes of a success (more is an error), the start of an error answer."""
        current = request
        for hop in range(MAX_REDIRECTS + 1):
            response = await self._send(current, purpose=purpose, target=target, kind=kind)
            try:
                if response.status_code in _REDIRECT_STATUSES and current.method == "GET":
                    if hop == MAX_REDIRECTS:
                        raise errors.BadResponseError(
                            f"{target.subject}: more than {MAX_REDIRECTS} redirects; the "
                            "registry is misconfigured",
                            registry=target.registry,
                            repository=target.repository,
                        )
                    current = self._redirect(current, response, target=target)
                    purpose = "redirect"
                    continue
                success = 200 <= response.status_code < 300
                body = await self._read(
                    response,
                    limit=limit if success else MAX_ERROR_BODY_BYTES,
                    strict=success,
                    target=target,
                )
                return _Answer(
                    status=response.status_code,
                    headers=response.headers,
                    body=body,
                    url=current.url,
                    redirected=hop > 0,
                )
            finally:
                await response.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    def _redirect(
        self, previous: httpx.Request, response: httpx.Response, *, target: _Target
    ) -> httpx.Request:
        try:
            return build_redirect_request(
                previous,
                response.headers.get("location"),
                policy=self._policy,
                registry=target.registry,
            )
        except errors.RegistryError as e:
            raise _in_context(e, target) from e

    async def _read(
        self, response: httpx.Response, *, limit: int, strict: bool, target: _Target
    ) -> bytes:
        """The body, at most ``limit`` bytes. ``strict``: more is a
        :class:`errors.ManifestTooLargeError` (checked against Content-Length before reading);
        else the rest is ignored."""
        declared = response.headers.get("content-length")
        if strict and declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(target, limit, f"Content-Length says {declared} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                if size + len(chunk) > limit:
                    if strict:
                        raise self._too_large(target, limit, "the body is longer")
                    chunks.append(chunk[: limit - size])
                    break
                chunks.append(chunk)
                size += len(chunk)
        except httpx.HTTPError as e:
            raise self._transport_error(e, url=response.request.url, target=target) from e
        return b"".join(chunks)

    def _too_large(self, target: _Target, limit: int, why: str) -> errors.ManifestTooLargeError:
        return errors.ManifestTooLargeError(
            f"{target.subject}: {why}, more than the {limit}-byte limit; a ModelKit manifest "
            "or Kitfile is a few KiB, so it was not read. Check the reference points at a "
            "ModelKit, or raise the limit",
            registry=target.registry,
            repository=target.repository,
        )

    async def _send(
        self,
        request: httpx.Request,
        *,
        purpose: hosts.Purpose,
        target: _Target,
        kind: RequestKind,
    ) -> httpx.Response:
        """The one place that sends: host policy (name and DNS answers), the client for the
        host's TLS settings, transport errors mapped. Returns a streamed response."""
        url = request.url
        try:
            host_port = _host_port(url)
            self._policy.check(host_port, purpose=purpose)
            await self._check_dns(url, host_port, purpose=purpose, target=target)
        except errors.HostNotAllowedError as e:
            raise _in_context(e, target) from e
        client = self._client_for(url, target=target)
        if self._on_request is not None:
            self._on_request(target.registry, kind)
        logger.debug("%s %s://%s%s", request.method, url.scheme, host_port, url.path)
        sending = _SENDING.set(purpose)
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except errors.HostNotAllowedError as e:  # an address a new connection resolved to
            raise _in_context(e, target) from e
        except httpx.HTTPError as e:
            raise self._transport_error(e, url=url, target=target) from e
        finally:
            _SENDING.reset(sending)

    async def _check_dns(
        self, url: httpx.URL, host_port: str, *, purpose: hosts.Purpose, target: _Target
    ) -> None:
        host = url.host
        if _is_ip(host):
            return
        now = time.monotonic()
        ok_until = self._dns_ok.get(host)
        if ok_until is not None and ok_until > now:
            return
        try:
            addresses = await self._resolve(
                host, url.port or (443 if url.scheme == "https" else 80)
            )
        except OSError as e:
            raise errors.UnreachableError(
                f"{target.subject}: cannot resolve {host} ({e.strerror or e}); check the "
                "registry name and the cluster's DNS",
                registry=target.registry,
                repository=target.repository,
            ) from e
        if not addresses:
            raise errors.UnreachableError(
                f"{target.subject}: {host} resolves to no address; check the registry name",
                registry=target.registry,
                repository=target.repository,
            )
        self._policy.check_resolved(host_port, addresses, purpose=purpose)
        if len(self._dns_ok) > 1024:
            self._dns_ok.clear()
        self._dns_ok[host] = now + DNS_OK_SECONDS

    def _client_for(self, url: httpx.URL, *, target: _Target) -> httpx.AsyncClient:
        ca_file = None
        if url.scheme == "https":
            ca_file = self._policy.config_for(_host_port(url)).ca_file
        client = self._clients.get(ca_file)
        if client is None:
            client = self._make_client(ca_file, target=target)
            self._clients[ca_file] = client
        return client

    def _make_client(self, ca_file: str | None, *, target: _Target) -> httpx.AsyncClient:
        if self._transport is not None:
            return httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, follow_redirects=False
            )
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise errors.UnreachableError(
                f"{target.subject}: cannot load the CA bundle {ca_file} ({e}); fix caFile for "
                f"{target.registry} in the registry config",
                registry=target.registry,
                repository=target.repository,
            ) from e
        if self._client_factory is not None:
            return self._client_factory(context)
        if environment_has_proxy():  # httpx's transport honours HTTP(S)_PROXY, NO_PROXY
            return httpx.AsyncClient(
                verify=context,
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=True,
            )
        return httpx.AsyncClient(
            transport=AiohttpTransport(context, resolve=self._connection_resolve),
            timeout=self._timeout,
            follow_redirects=False,
        )

    async def _connection_resolve(self, host: str, port: int) -> Sequence[str]:
        """The addresses a new connection to ``host`` may go to (the transport's only DNS):
        ``resolve``'s answers, refused by the host policy as in :meth:`_check_dns` (the
        :class:`errors.HostNotAllowedError` reaches :meth:`_send` through the transport), so
        a name that passed the check cannot be re-pointed when the connection is made."""
        addresses = await self._resolve(host, port)
        self._policy.check_resolved(
            hosts.join_host_port(host, port), addresses, purpose=_SENDING.get()
        )
        return addresses

    # -- error mapping -----------------------------------------------------------------------

    def _transport_error(
        self, e: httpx.HTTPError, *, url: httpx.URL, target: _Target
    ) -> errors.RegistryError:
        host = _host_port(url)
        where = {"registry": target.registry, "repository": target.repository}
        if isinstance(e, httpx.TimeoutException):
            return errors.RegistryTimeoutError(
                f"{target.subject}: {host} did not answer in time ({e.__class__.__name__}); the "
                "registry is slow or unreachable, try again",
                **where,
            )
        if _tls_verification_failed(e):
            return errors.UnreachableError(
                f"{target.subject}: TLS verification of {host} failed ({e}); if "
                f"{target.registry} uses a private CA, configure caFile for {target.registry} "
                "in the registry config",
                **where,
            )
        if isinstance(e, httpx.DecodingError):
            return errors.BadResponseError(
                f"{target.subject}: {host} sent a body that cannot be decoded ({e})", **where
            )
        return errors.UnreachableError(
            f"{target.subject}: cannot talk to {host} ({e.__class__.__name__}: {e}); check the "
            "registry name, network policies and egress, and plainHTTP if it serves plain HTTP",
            **where,
        )

    def _status_error(
        self, answer: _Answer, *, target: _Target, credential: types.Credential | None
    ) -> errors.RegistryError:
        codes, said = _oci_errors(answer.body)
        detail = f" (the registry said: {said})" if said else ""
        status = answer.status
        where = {"registry": target.registry, "repository": target.repository}
        who = auth.describe_credential(credential)
        if status == 404 or codes & _NOT_FOUND_CODES:
            return errors.NotFoundError(
                f"{target.subject} not found ({status}){detail}; check the repository and tag. "
                "A private repository can look missing without credentials: add a pull secret "
                f"for {target.registry} to the namespace",
                **where,
            )
        if status == 401:
            return errors.UnauthorizedError(
                f"{target.subject}: {target.registry} refused {who} (401){detail}; add a pull "
                f"secret for {target.registry} to the namespace (imagePullSecrets), or check "
                f"the credentials for {target.registry}",
                **where,
            )
        if status == 403:
            return errors.ForbiddenError(
                f"{target.subject}: {target.registry} denied {who} access to "
                f"{target.repository} (403){detail}; grant that credential pull access to "
                f"{target.repository}, or use one that has it",
                **where,
            )
        if status == 429:
            retry_after = parse_retry_after(answer.headers.get("retry-after"), now=self._clock())
            wait = f"retry after {retry_after:.0f} s" if retry_after is not None else "retry later"
            return errors.RateLimitedError(
                f"{target.subject}: {target.registry} is rate limiting kitpin (429){detail}; "
                f"{wait}, or authenticate to get a higher limit",
                retry_after=retry_after,
                **where,
            )
        if status >= 500:
            return errors.RegistryError(
                f"{target.subject}: {target.registry} failed with {status}{detail}; the "
                "registry has a problem, try again later",
                **where,
            )
        return errors.BadResponseError(
            f"{target.subject}: {target.registry} answered {status}{detail}, which kitpin cannot "
            "use; check the reference and the registry",
            **where,
        )
