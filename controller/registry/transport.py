"""httpx's transport interface over aiohttp's HTTP/1.1 client: :class:`AiohttpTransport`.

The registry client speaks httpx (``httpx.Request``/``httpx.Response``, ``httpx.MockTransport``
in the unit tests); only the I/O under it is aiohttp's, which costs a fraction of the CPU per
request of httpx's default transport (httpcore rescans its whole pool on every event).

What goes over the wire is what httpx's default transport would send: the request's own
headers and body as they are, nothing added (aiohttp's automatic ``Accept``,
``Accept-Encoding``, ``User-Agent`` and ``Content-Type`` are skipped), no cookies, no
redirects followed, no proxy and no ``.netrc`` from the environment. What comes back is given
to httpx raw: the status, every header as received (repeated ones stay repeated), and the body
as the bytes on the wire, never decompressed (httpx decodes ``Content-Encoding`` itself) and
read lazily. A response closed before its body was read to the end closes its connection;
only a connection read to the end goes back to the pool. One difference: where httpx checks
a pooled connection before reusing it, aiohttp sends an idempotent request (GET) once more
when its connection is closed before any answer came (a keep-alive connection the server
dropped meanwhile); a server that always hangs up so sees a GET twice.

httpx's timeouts (``request.extensions["timeout"]``) map to aiohttp's: ``connect`` to the
socket connect (TCP and TLS handshake), ``read`` to each socket read, ``pool`` plus
``connect`` to acquiring a connection as a whole (waiting for a free one included). aiohttp
has no write timeout; the registry client's request bodies are a few hundred bytes. aiohttp's
errors surface as the httpx exceptions httpx's own transport raises in the same situation
(:func:`_httpx_error`).

``resolve``: the only DNS the connections use, e.g. a lookup whose answers are checked
against a host policy, so that a connection goes only to an address that was checked (no
second lookup a DNS rebinding could answer differently). IP-literal hosts are not looked up.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Final

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "DEFAULT_KEEPALIVE_SECONDS",
    "DEFAULT_LIMIT",
    "DEFAULT_LIMIT_PER_HOST",
    "AiohttpTransport",
    "Resolve",
    "environment_has_proxy",
]

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""``resolve(host, port)`` → the IP addresses a connection to ``host`` may go to; raises
``OSError`` when the name does not resolve (anything else it raises fails the request as is)."""

DEFAULT_LIMIT_PER_HOST: Final = 32
"""Connections open at once to one ``scheme://host:port``; more requests wait for one."""
DEFAULT_LIMIT: Final = 100
"""Connections open at once in all (httpx's default ``max_connections``)."""
DEFAULT_KEEPALIVE_SECONDS: Final = 5.0
"""How long an idle connection stays pooled (httpx's default ``keepalive_expiry``)."""
MAX_HEADER_LINE_BYTES: Final = 16 * 1024
"""The longest status line or header field accepted (h11, under httpx, caps the whole header
block at 16 KiB; aiohttp's default of 8190 bytes per field would refuse what httpx read)."""

_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""aiohttp adds these when the request has none; httpx's transport sends only what the
request carries."""


def environment_has_proxy() -> bool:
    """Whether an ``httpx.AsyncClient(trust_env=True)`` with its default transport would send
    some requests through a proxy from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, read as httpx reads them; ``NO_PROXY=*`` turns them all off). This transport
    never uses a proxy: behind one, keep httpx's transport."""
    found = urllib.request.getproxies()
    if any(host.strip() == "*" for host in found.get("no", "").split(",")):
        return False
    return any(found.get(scheme) for scheme in ("http", "https", "all"))


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` sending through one ``aiohttp.ClientSession`` (one
    connection pool), created on the first request inside the running event loop.

    ``ssl_context`` verifies https servers (``None``: aiohttp's default verification);
    ``resolve`` replaces the system DNS lookup; ``limit_per_host`` and ``limit`` bound the
    connections open at once per host and in all; ``keepalive_seconds`` is how long an idle
    connection is kept."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        resolve: Resolve | None = None,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        limit: int = DEFAULT_LIMIT,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        if limit_per_host < 1 or limit < 1:
            raise ValueError("limit and limit_per_host must be at least 1")
        self._ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
        self._resolve = resolve
        self._limit_per_host = limit_per_host
        self._limit = limit
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        session = self._session
        if session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                resolver=None if self._resolve is None else _Resolver(self._resolve),
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                keepalive_timeout=self._keepalive_seconds,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                max_line_size=MAX_HEADER_LINE_BYTES,
                max_field_size=MAX_HEADER_LINE_BYTES,
            )
            self._session = session
        return session

    def _timeout(self, extension: object) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for httpx's ``request.extensions["timeout"]``."""
        phases: Mapping[str, float | None] = extension if isinstance(extension, dict) else {}
        connect, read, pool = phases.get("connect"), phases.get("read"), phases.get("pool")
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=read,
            )
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_now()
        body = await request.aread()
        headers: list[tuple[str, str]] = []
        chunked: bool | None = None
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding":
                chunked = True  # the body is read whole: aiohttp frames it again
                continue
            headers.append((_text(name), _text(value)))
        try:
            response = await session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                chunked=chunked,
                allow_redirects=False,
                timeout=self._timeout(request.extensions.get("timeout")),
            )
        except (aiohttp.ClientError, OSError) as e:
            raise _httpx_error(e, request, reading=False) from e
        version = response.version
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": f"HTTP/{version.major}.{version.minor}".encode()
                if version is not None
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
            request=request,
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it: chunks as they arrive; on close the
    connection goes back to the pool if the body was read to its end, else it is closed."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, OSError) as e:
            raise _httpx_error(e, self._request, reading=True) from e
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        response = self._response
        content = response.content
        if content.at_eof() and content.exception() is None:
            response.release()
        else:
            response.close()


class _Resolver(AbstractResolver):
    """aiohttp's DNS through a :data:`Resolve` function."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        seen: set[str] = set()
        for text in await self._resolve(host, port):
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue  # not an address: nothing to dial
            found = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if (family and family != found) or text in seen:
                continue
            seen.add(text)
            results.append(
                {
                    "hostname": host,
                    "host": text,
                    "port": port,
                    "family": found,
                    "proto": socket.IPPROTO_TCP,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no usable address")
        return results

    async def close(self) -> None:
        pass


def _text(raw: bytes) -> str:
    """A header name or value for aiohttp, which encodes it back as UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _httpx_error(e: BaseException, request: httpx.Request, *, reading: bool) -> httpx.HTTPError:
    """The httpx exception httpx's own transport raises where aiohttp raised ``e``; the caller
    chains ``e`` (``raise ... from e``), so a TLS verification failure keeps its
    ``ssl.SSLCertVerificationError`` in the chain, as with httpx's transport."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(e) or "connect timed out", request=request)
    if isinstance(e, TimeoutError):  # aiohttp.SocketTimeoutError, ServerTimeoutError
        return httpx.ReadTimeout(str(e) or "read timed out", request=request)
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return httpx.ConnectError(str(e.certificate_error), request=request)
    if isinstance(e, aiohttp.ClientConnectorError):  # refused, DNS, TLS, proxy
        return httpx.ConnectError(str(e.os_error) or str(e), request=request)
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
            if reading
            else "Server disconnected without sending a response.",
            request=request,
        )
    if isinstance(e, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        # A body cut short or malformed framing; a malformed status line or header block.
        return httpx.RemoteProtocolError(str(e), request=request)
    if isinstance(e, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(str(e), request=request)
    if isinstance(e, OSError):  # aiohttp.ClientOSError: reset, broken pipe
        return httpx.ReadError(str(e), request=request)
    return httpx.TransportError(str(e) or e.__class__.__name__, request=request)
