"""A fault-injecting HTTP proxy in front of a real registry: a hostile registry on loopback.

One :class:`FaultProxy` is an aiohttp server on ``127.0.0.1`` (its own thread and event loop,
so tests and worker processes talk to it like to any registry) that forwards every request
to ``upstream`` (the real CNCF distribution registry of :mod:`harness.registry`) unless a
:class:`Rule` matches it; then the rule's :class:`Fault` answers instead, usually from the
upstream's real answer (the genuine manifest, its real digest header) mangled as an attacker
would. What a fault can do:

* time: :class:`Delay` (latency before the answer), :class:`Trickle` (a body one byte at a
  time);
* the connection: :class:`Reset` (RST or FIN before the answer or in the middle of the body);
* the answer: :class:`Status` (any status, headers and body), :class:`Body` (any bytes with
  their own correct ``Docker-Content-Digest``: garbage or deeply nested JSON, an index where a
  manifest belongs, a token answer), :class:`Mangle` (the genuine answer with its headers or
  body changed: a wrong digest header, a body that does not match its digest);
* size: :class:`Oversized` (an honest, too large ``Content-Length``), :class:`Endless` (a
  chunked body that never ends), :class:`Bomb` (a small body with ``Content-Encoding: gzip,
  gzip`` that decodes to hundreds of MiB);
* where to go: :class:`Redirect` (loops, forbidden hosts), :class:`BearerChallenge` (a token
  realm of the attacker's choosing).

Rules are selected per request (method, path regex, anonymous or not) and counted: ``skip``
lets the first matches through (a cache warmed by a good answer, then the fault), ``times``
limits how many get the fault. Tests set the rules of one case with :meth:`FaultProxy.rules`
and check :meth:`FaultProxy.hits` afterwards (a fault that never fired proves nothing).
Every request is recorded (:meth:`FaultProxy.records`, :meth:`FaultProxy.log_tail`) for the
failure report.

The proxy never sleeps in a test: the latency it injects is what a deadline must beat, and
every wait ends when the client hangs up (aiohttp's handler cancellation) or the proxy stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

import aiohttp
from aiohttp import web

__all__ = [
    "BearerChallenge",
    "Body",
    "Bomb",
    "Delay",
    "Endless",
    "Exchange",
    "Fault",
    "FaultProxy",
    "Mangle",
    "Oversized",
    "Passthrough",
    "ProxyRecord",
    "Redirect",
    "Reset",
    "Rule",
    "Status",
    "Trickle",
    "Upstream",
    "bomb_bytes",
    "deep_json",
    "digest_of",
    "rules_summary",
    "token_answer",
]

MiB = 1024 * 1024

HOLD_SECONDS = 120.0
"""The longest a :class:`Delay` or :class:`Trickle` holds a request when the client does not
hang up first (it does: its deadline ends the wait long before)."""
ENDLESS_CEILING = 2 * 1024 * MiB
"""An :class:`Endless` body stops here even if the client keeps reading (a client that reads
it all has failed the test long before)."""
_CHUNK = 64 * 1024

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "date",
        "server",
    }
)
_FORWARDED_REQUEST_HEADERS = ("accept", "accept-encoding", "authorization", "user-agent")


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def deep_json(depth: int, *, kind: Literal["array", "object"] = "array", prefix: str = "") -> bytes:
    """A JSON document nested ``depth`` levels deep (well-formed: every bracket closed), after
    ``prefix`` (``'{"errors":'`` puts it where an OCI error body keeps its list)."""
    if kind == "array":
        inner = "[" * depth + "]" * depth
    else:
        inner = '{"a":' * depth + "1" + "}" * depth
    suffix = "}" if prefix.startswith("{") else ""
    return (prefix + inner + suffix).encode()


@functools.lru_cache(maxsize=8)
def bomb_bytes(decoded_size: int, encodings: tuple[str, ...]) -> bytes:
    """``decoded_size`` zero bytes encoded by each of ``encodings`` in turn (``gzip`` or
    ``deflate``), as the ``Content-Encoding`` header lists them: ``("gzip", "gzip")`` is about
    600 bytes for 256 MiB. Built once per size and encoding list."""
    data: bytes | None = None
    for i, encoding in enumerate(encodings):
        if encoding not in ("gzip", "deflate"):
            raise ValueError(f"unsupported encoding {encoding!r}: gzip or deflate")
        wbits = 31 if encoding == "gzip" else 15  # gzip container, or zlib (HTTP "deflate")
        compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
        if i == 0:
            zeros = bytes(MiB)
            parts = [compressor.compress(zeros) for _ in range(decoded_size // MiB)]
            parts.append(compressor.compress(bytes(decoded_size % MiB)))
        else:
            assert data is not None
            parts = [compressor.compress(data)]
        parts.append(compressor.flush())
        data = b"".join(parts)
    assert data is not None
    return data


# -- what a fault works with ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """The real registry's answer to the request (body read whole: registry answers are
    small)."""

    status: int
    headers: Mapping[str, str]
    """Lowercased names, end-to-end headers only."""
    body: bytes


@dataclass(frozen=True, kw_only=True)
class ProxyRecord:
    """One request the proxy answered."""

    method: str
    path: str
    query: str
    fault: str
    """The fault's name (``passthrough`` when no rule matched)."""
    rule: int | None
    """Index of the matching rule in the current rule list, else None."""
    status: int | None
    """The status sent (None when the connection was cut before an answer)."""
    authorized: bool
    at: float


class Exchange:
    """One request in the proxy: the aiohttp request, the proxy's own URL, the upstream."""

    def __init__(self, proxy: FaultProxy, request: web.Request) -> None:
        self.proxy = proxy
        self.request = request
        self.status: int | None = None

    @property
    def proxy_url(self) -> str:
        return self.proxy.url

    def format(self, text: str) -> str:
        """``text`` with ``{proxy}`` (``http://127.0.0.1:PORT``), ``{host}`` (``127.0.0.1:PORT``),
        ``{port}``, and ``{path}`` and ``{path_qs}`` of this request filled in."""
        return text.format(
            proxy=self.proxy.url,
            host=self.proxy.host,
            port=self.proxy.port,
            path=self.request.path,
            path_qs=self.request.path_qs,
        )

    async def upstream(self) -> Upstream:
        return await self.proxy._forward(self.request)

    async def send(
        self, status: int, headers: Mapping[str, str], body: bytes = b""
    ) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers=_multi(headers))
        self.status = status
        return response

    async def relay(self, answer: Upstream) -> web.StreamResponse:
        return await self.send(answer.status, answer.headers, answer.body)

    def cut(self, *, rst: bool) -> None:
        """Drop the connection now: a TCP reset (``rst``) or an orderly close."""
        transport = self.request.transport
        if transport is None:
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()


def _multi(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


class Fault(Protocol):
    """What answers a request a :class:`Rule` matched."""

    @property
    def name(self) -> str: ...

    async def respond(self, exchange: Exchange) -> web.StreamResponse: ...


# -- faults --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Passthrough:
    """The upstream's answer, unchanged."""

    name: str = "passthrough"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        return await exchange.relay(await exchange.upstream())


@dataclass(frozen=True, kw_only=True)
class Delay:
    """Hold the request ``seconds`` (or until the client hangs up), then answer with ``then``."""

    seconds: float = HOLD_SECONDS
    then: Fault = field(default_factory=Passthrough)
    name: str = "delay"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.seconds)
        return await self.then.respond(exchange)


@dataclass(frozen=True, kw_only=True)
class Trickle:
    """The upstream's answer with its real Content-Length, the body sent ``step`` bytes every
    ``interval`` seconds (slowloris: every read gets something, the whole never comes)."""

    interval: float = 0.2
    step: int = 1
    name: str = "trickle"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        answer = await exchange.upstream()
        response = web.StreamResponse(status=answer.status, headers=_multi(answer.headers))
        response.content_length = len(answer.body)
        exchange.status = answer.status
        await response.prepare(exchange.request)
        started = time.monotonic()
        for i in range(0, len(answer.body), self.step):
            await response.write(answer.body[i : i + self.step])
            if time.monotonic() - started > HOLD_SECONDS:
                break
            await asyncio.sleep(self.interval)
        return response


@dataclass(frozen=True, kw_only=True)
class Reset:
    """Cut the connection: before any answer (``after=None``) or after sending the headers and
    the first ``after`` fraction of the genuine body (Content-Length announcing all of it).
    ``rst``: a TCP reset, else an orderly close (FIN) short of the announced length."""

    after: float | None = 0.5
    rst: bool = True
    name: str = "reset"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        if self.after is None:
            exchange.cut(rst=self.rst)
            return web.Response()  # never sent: the connection is gone
        answer = await exchange.upstream()
        response = web.StreamResponse(status=answer.status, headers=_multi(answer.headers))
        response.content_length = len(answer.body)
        exchange.status = answer.status
        await response.prepare(exchange.request)
        await response.write(answer.body[: int(len(answer.body) * self.after)])
        await asyncio.sleep(0.05)  # the proxy's own pacing: let the part reach the client
        exchange.cut(rst=self.rst)
        return response


@dataclass(frozen=True, kw_only=True)
class Status:
    """A fixed answer: ``status``, ``headers`` (``{proxy}`` etc. filled in), ``body``."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = "status"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        headers = {k: exchange.format(v) for k, v in self.headers.items()}
        headers.setdefault("Content-Type", "application/json")
        return await exchange.send(self.status, headers, self.body)


@dataclass(frozen=True, kw_only=True)
class Body:
    """A 200 (or ``status``) with ``body`` and, by default, its own correct
    ``Docker-Content-Digest``: the registry vouches for whatever it serves."""

    body: bytes
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    status: int = 200
    with_digest: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = "body"

    @classmethod
    def json(cls, document: Any, **kwargs: Any) -> Body:
        return cls(body=json.dumps(document).encode(), **kwargs)

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        headers = {"Content-Type": self.content_type, **self.headers}
        if self.with_digest:
            headers["Docker-Content-Digest"] = digest_of(self.body)
        return await exchange.send(self.status, headers, self.body)


@dataclass(frozen=True, kw_only=True)
class Mangle:
    """The genuine answer, changed: ``body(bytes) -> bytes`` and ``headers`` set (a None value
    removes the header). ``digest``: ``"keep"`` the genuine header, ``"recompute"`` it for the
    new body, or ``"drop"`` it."""

    body: Callable[[bytes], bytes] | None = None
    headers: Mapping[str, str | None] = field(default_factory=dict)
    digest: Literal["keep", "recompute", "drop"] = "keep"
    name: str = "mangle"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        answer = await exchange.upstream()
        body = answer.body if self.body is None else self.body(answer.body)
        headers = dict(answer.headers)
        if self.digest == "recompute":
            headers["docker-content-digest"] = digest_of(body)
        elif self.digest == "drop":
            headers.pop("docker-content-digest", None)
        for name, value in self.headers.items():
            headers.pop(name.lower(), None)
            if value is not None:
                headers[name.lower()] = value
        return await exchange.send(answer.status, headers, body)


@dataclass(frozen=True, kw_only=True)
class Oversized:
    """A 200 announcing ``size`` bytes (honestly: it sends them, as long as the client reads)."""

    size: int
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    name: str = "oversized"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": self.content_type})
        response.content_length = self.size
        exchange.status = 200
        await response.prepare(exchange.request)
        sent = 0
        while sent < self.size:
            part = b" " * min(_CHUNK, self.size - sent)
            await response.write(part)
            sent += len(part)
        return response


@dataclass(frozen=True, kw_only=True)
class Endless:
    """A chunked answer (no Content-Length) that never ends: ``status``, JSON-ish filler."""

    status: int = 200
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    name: str = "endless"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        response = web.StreamResponse(
            status=self.status, headers={"Content-Type": self.content_type}
        )
        response.enable_chunked_encoding()
        exchange.status = self.status
        await response.prepare(exchange.request)
        chunk = b'{"a":' + b"1" * (_CHUNK - 5)
        sent = 0
        while sent < ENDLESS_CEILING:
            await response.write(chunk)
            sent += len(chunk)
        return response


@dataclass(frozen=True, kw_only=True)
class Bomb:
    """A compression bomb: ``decoded_size`` zero bytes encoded by ``encodings``, sent with
    ``Content-Encoding`` naming them (kitpin asked for ``identity``) and, with ``status`` 200,
    the genuine answer's digest header (it pretends to be the real manifest)."""

    decoded_size: int = 256 * MiB
    encodings: tuple[str, ...] = ("gzip", "gzip")
    status: int = 200
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    name: str = "bomb"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, bomb_bytes, self.decoded_size, self.encodings)
        headers = {"Content-Type": self.content_type, "Content-Encoding": ", ".join(self.encodings)}
        if self.status == 200:
            genuine = await exchange.upstream()
            if "docker-content-digest" in genuine.headers:
                headers["Docker-Content-Digest"] = genuine.headers["docker-content-digest"]
        return await exchange.send(self.status, headers, body)


@dataclass(frozen=True, kw_only=True)
class Redirect:
    """A redirect to ``location`` (:meth:`Exchange.format` fills in ``{proxy}``, ``{path}``,
    ...): the same URL again is a loop."""

    location: str
    status: int = 307
    name: str = "redirect"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        return await exchange.send(
            self.status, {"Location": exchange.format(self.location), "Content-Length": "0"}
        )


@dataclass(frozen=True, kw_only=True)
class BearerChallenge:
    """``401`` with ``WWW-Authenticate: Bearer realm=...``: ``realm`` (default: this proxy's
    ``/token``, which the client may use over plain HTTP since it is the registry itself)."""

    realm: str = "{proxy}/token"
    service: str = "faultproxy"
    name: str = "bearer-challenge"

    async def respond(self, exchange: Exchange) -> web.StreamResponse:
        realm = exchange.format(self.realm)
        challenge = f'Bearer realm="{realm}",service="{self.service}"'
        m = re.match(r"^/v2/(.+)/(manifests|blobs)/", exchange.request.path)
        if m:
            challenge += f',scope="repository:{m.group(1)}:pull"'
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        return await exchange.send(
            401, {"Content-Type": "application/json", "WWW-Authenticate": challenge}, body
        )


def token_answer(
    expires_in: object = 300, *, token: object = "faultproxy-token", **extra: object
) -> Body:
    """A token endpoint's answer: ``token`` (a good one by default) and ``expires_in`` as
    given (any JSON value), plus ``extra`` fields."""
    document: dict[str, object] = {"token": token, "expires_in": expires_in}
    document.update(extra)
    return Body(
        body=json.dumps(document).encode(),
        content_type="application/json",
        with_digest=False,
        name="token",
    )


# -- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Which requests get ``fault``: ``method`` (None: any), ``path`` (a regex matched in full
    against the request path, without the query), ``anonymous_only`` (only requests without
    ``Authorization``); of those, the first ``skip`` pass through untouched, then at most
    ``times`` (None: every one) get the fault, and the rest go on to the next rules."""

    fault: Fault
    path: str = r"/.*"
    method: str | None = "GET"
    anonymous_only: bool = False
    skip: int = 0
    times: int | None = None

    def matches(self, request: web.Request) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if self.anonymous_only and "Authorization" in request.headers:
            return False
        return re.fullmatch(self.path, request.path) is not None


# -- the proxy -----------------------------------------------------------------------------------


class FaultProxy:
    """The proxy; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, upstream: str, *, name: str = "faultproxy") -> None:
        self.upstream = upstream.rstrip("/")
        self.name = name
        self.port = 0
        self._rules: tuple[Rule, ...] = ()
        self._seen: list[int] = []
        """Per rule: matching requests so far (``skip`` counts against this)."""
        self._hits: list[int] = []
        """Per rule: requests that got the fault."""
        self._lock = threading.Lock()
        self._records: list[ProxyRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"{self.name} did not start within 30 s")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._loop = self._thread = None

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A client that hangs up cancels its handler: a held request ends with its client.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- addresses

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference through the proxy."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- rules and records

    def set_rules(self, *rules: Rule) -> None:
        """Replace the rules (and their counters); the first rule that matches a request
        applies."""
        with self._lock:
            self._rules = tuple(rules)
            self._seen = [0] * len(rules)
            self._hits = [0] * len(rules)

    @contextlib.contextmanager
    def rules(self, *rules: Rule) -> Iterator[FaultProxy]:
        """``rules`` for the duration of the block (then none: everything passes through)."""
        self.set_rules(*rules)
        try:
            yield self
        finally:
            self.set_rules()

    def hits(self) -> list[int]:
        """Per rule of the current list: how many requests got its fault."""
        with self._lock:
            return list(self._hits)

    def records(self) -> list[ProxyRecord]:
        with self._lock:
            return list(self._records)

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    def log_tail(self, lines: int = 40) -> str:
        records = self.records()[-lines:]
        text = "\n".join(
            f"{r.method} {r.path}{'?' + r.query if r.query else ''} -> {r.status or 'cut'} "
            f"[{r.fault}{'' if r.rule is None else f' rule {r.rule}'}]"
            f"{' (authorized)' if r.authorized else ''}"
            for r in records
        )
        return f"--- last {len(records)} requests at {self.name} {self.url} ---\n{text}"

    def _choose(self, request: web.Request) -> tuple[int | None, Fault]:
        with self._lock:
            for i, rule in enumerate(self._rules):
                if not rule.matches(request):
                    continue
                self._seen[i] += 1
                if self._seen[i] <= rule.skip:
                    return None, Passthrough()
                if rule.times is not None and self._hits[i] >= rule.times:
                    continue
                self._hits[i] += 1
                return i, rule.fault
        return None, Passthrough()

    # -- serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        index, fault = self._choose(request)
        exchange = Exchange(self, request)
        try:
            return await fault.respond(exchange)
        except ConnectionError:
            # The client hung up mid-answer (its deadline, its size cap). What is returned is
            # never sent: aiohttp's server takes the failure to send it as the client gone.
            return web.Response()
        finally:
            record = ProxyRecord(
                method=request.method,
                path=request.path,
                query=request.query_string,
                fault=fault.name,
                rule=index,
                status=exchange.status,
                authorized="Authorization" in request.headers,
                at=time.time(),
            )
            with self._lock:
                self._records.append(record)
                del self._records[:-2000]

    async def _forward(self, request: web.Request) -> Upstream:
        assert self._session is not None
        headers = {
            name: request.headers[name]
            for name in _FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            headers=headers,
            data=await request.read() or None,
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            kept = {
                name.lower(): value
                for name, value in answer.headers.items()
                if name.lower() not in _HOP_BY_HOP
            }
            return Upstream(status=answer.status, headers=kept, body=body)


def rules_summary(rules: Sequence[Rule]) -> str:
    """One line per rule, for failure reports."""
    return "\n".join(
        f"rule {i}: {r.method or '*'} {r.path} -> {r.fault.name}"
        f"{' (anonymous only)' if r.anonymous_only else ''}"
        f"{f' skip {r.skip}' if r.skip else ''}{f' times {r.times}' if r.times else ''}"
        for i, r in enumerate(rules)
    )
