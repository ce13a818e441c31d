"""Sending the registry client's requests: :meth:`Sender.send` is the one place that sends.

Before sending it checks the host against the :class:`~controller.registry.hosts.HostPolicy`
(the name, then its DNS answers: :mod:`.dns`), picks the ``httpx.AsyncClient`` for the host's
TLS settings (one per distinct CA bundle, created lazily and reused for connection pooling),
and maps transport errors (:mod:`.responses`). By default those clients send through
:class:`~controller.registry.transport.AiohttpTransport` (httpx's own transport behind a
proxy from the environment), whose connections go only to addresses that pass the host policy.

Redirects of GETs and HEADs are followed by :meth:`Sender.exchange`, at most
:data:`MAX_REDIRECTS`, each target checked like the first host; ``Authorization`` goes only to
the origin that asked for it (:func:`~controller.registry.requests.build_redirect_request`).
It reads the final body with a hard size cap (:func:`~controller.registry.responses.read_body`);
of a HEAD's answer, none.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Final

import httpx

from controller import errors, metrics
from controller.registry import dns, hosts, requests, responses
from controller.registry.responses import Answer, Target
from controller.registry.transport import AiohttpTransport, Resolve, environment_has_proxy

__all__ = ["DEFAULT_TIMEOUT", "MAX_REDIRECTS", "ClientFactory", "RequestKind", "Sender"]

logger = logging.getLogger(__name__)

MAX_REDIRECTS: Final = 3

DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=3.0)
"""Per request phase. A backstop: the resolver's deadline bounds a whole resolution."""

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_FOLLOWED: Final = frozenset({"GET", "HEAD"})
"""The methods whose redirects are followed (kitpin sends no others to a registry)."""

RequestKind = metrics.RegistryRequestKind
"""What a request is for (the label of ``kitpin_registry_requests_total``)."""
ClientFactory = Callable[[ssl.SSLContext], httpx.AsyncClient]
"""Makes the ``httpx.AsyncClient`` for one TLS configuration."""


class Sender:
    """Sends the registry client's requests: host policy, DNS, TLS settings, redirects, size
    caps, transport errors. Holds the connection pools; call :meth:`aclose`.

    ``transport``: send everything through this transport (tests: ``httpx.MockTransport``);
    ``client_factory``: or make each ``AsyncClient`` from its ``ssl.SSLContext``.
    ``resolve``: the DNS lookup whose answers the host policy checks.
    ``on_request(registry, kind)``: called for every HTTP request sent (metrics)."""

    def __init__(
        self,
        policy: hosts.HostPolicy,
        *,
        transport: httpx.AsyncBaseTransport | None,
        client_factory: ClientFactory | None,
        timeout: httpx.Timeout,
        resolve: Resolve,
        on_request: Callable[[str, RequestKind], None] | None,
    ) -> None:
        self._policy = policy
        self._transport = transport
        self._client_factory = client_factory
        self._timeout = timeout
        self._dns = dns.CheckedResolver(policy, resolve)
        self._on_request = on_request
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    async def aclose(self) -> None:
        """Close the connection pools."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def exchange(
        self,
        request: httpx.Request,
        *,
        purpose: hosts.Purpose,
        target: Target,
        kind: RequestKind,
        limit: int,
    ) -> Answer:
        """Send ``request``, following redirects of GETs and HEADs, and read the final body:
        at most ``limit`` bytes of a success (more is an error), the start of an error answer.
        The answer to a HEAD has no body: none is read (its ``Content-Length`` and
        ``Content-Encoding`` describe what a GET would send), ``Answer.body`` is empty."""
        current = request
        for hop in range(MAX_REDIRECTS + 1):
            response = await self.send(current, purpose=purpose, target=target, kind=kind)
            try:
                if response.status_code in _REDIRECT_STATUSES and current.method in _FOLLOWED:
                    if hop == MAX_REDIRECTS:
                        raise target.error(
                            errors.BadResponseError,
                            f"more than {MAX_REDIRECTS} redirects; the registry is misconfigured",
                        )
                    current = self._redirect(current, response, target=target)
                    purpose = "redirect"
                    continue
                success = 200 <= response.status_code < 300
                body = (
                    b""
                    if current.method == "HEAD"
                    else await responses.read_body(
                        response,
                        limit=limit if success else responses.MAX_ERROR_BODY_BYTES,
                        strict=success,
                        target=target,
                    )
                )
                return Answer(
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
        self, previous: httpx.Request, response: httpx.Response, *, target: Target
    ) -> httpx.Request:
        try:
            return requests.build_redirect_request(
                previous,
                response.headers.get("location"),
                policy=self._policy,
                registry=target.registry,
            )
        except errors.RegistryError as e:
            raise responses.in_context(e, target) from e

    async def send(
        self,
        request: httpx.Request,
        *,
        purpose: hosts.Purpose,
        target: Target,
        kind: RequestKind,
    ) -> httpx.Response:
        """The one place that sends: host policy (name and DNS answers), the client for the
        host's TLS settings, transport errors mapped (and what httpx raises on a
        redirect's unreadable Location: a bad response). Returns a streamed response."""
        url = request.url
        try:
            host_port = hosts.host_port_of(url)
            self._policy.check(host_port, purpose=purpose)
            await self._dns.check(url, purpose=purpose, target=target)
        except errors.HostNotAllowedError as e:
            raise responses.in_context(e, target) from e
        client = self._client_for(url, target=target)
        if self._on_request is not None:
            self._on_request(target.registry, kind)
        logger.debug("%s %s://%s%s", request.method, url.scheme, host_port, url.path)
        with dns.sending(purpose):
            try:
                return await client.send(request, stream=True, follow_redirects=False)
            except errors.HostNotAllowedError as e:  # an address a new connection resolved to
                raise responses.in_context(e, target) from e
            except httpx.HTTPError as e:
                raise responses.transport_error(e, url=url, target=target) from e
            except (ValueError, httpx.InvalidURL) as e:
                # httpx reads a redirect's Location itself (for ``next_request``, even when not
                # following it) and lets through idna's errors on a malformed xn-- host and
                # its own InvalidURL (not an HTTPError) on, say, ``Location: sha256:…``.
                raise target.error(
                    errors.BadResponseError,
                    f"{host_port} answered with a redirect kitpin cannot read "
                    f"({e.__class__.__name__}: {e}); the registry is misbehaving",
                ) from e

    def _client_for(self, url: httpx.URL, *, target: Target) -> httpx.AsyncClient:
        ca_file = None
        if url.scheme == "https":
            ca_file = self._policy.config_for(hosts.host_port_of(url)).ca_file
        client = self._clients.get(ca_file)
        if client is None:
            client = self._make_client(ca_file, target=target)
            self._clients[ca_file] = client
        return client

    def _make_client(self, ca_file: str | None, *, target: Target) -> httpx.AsyncClient:
        if self._transport is not None:
            return httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, follow_redirects=False
            )
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise target.error(
                errors.UnreachableError,
                f"cannot load the CA bundle {ca_file} ({e}); fix caFile for {target.registry} "
                "in the registry config",
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
            transport=AiohttpTransport(context, resolve=self._dns.for_connection),
            timeout=self._timeout,
            follow_redirects=False,
        )
