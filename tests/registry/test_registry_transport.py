"""AiohttpTransport against real local servers (aiohttp web apps, TLS with a trustme CA, and
raw asyncio servers scripting misbehaviour): what goes over the wire equals what httpx's own
transport sends, responses come back raw and lazily, every aiohttp failure surfaces as the
httpx exception the registry client handles, connections go only where ``resolve`` says, and
the registry client uses it by default."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web
from registry_fakes import OCI_MANIFEST, FakeDNS, modelkit_manifest, ref, sha256

from controller import errors
from controller.registry import hosts
from controller.registry.client import RegistryClient
from controller.registry.responses import _tls_verification_failed
from controller.registry.transport import AiohttpTransport

FAST = httpx.Timeout(2.0)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry client keeps httpx's transport behind an environment proxy; these tests
    are about the aiohttp one."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- servers ------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What a web server saw: each request's method, path, raw headers, body and peer."""

    requests: list[tuple[str, str, list[tuple[bytes, bytes]], bytes, Any]] = field(
        default_factory=list
    )

    def headers(self, index: int = -1) -> list[tuple[bytes, bytes]]:
        return self.requests[index][2]

    def peers(self, path: str | None = None) -> list[Any]:
        return [r[4] for r in self.requests if path is None or r[1] == path]


Serve = Callable[..., Awaitable[int]]
"""``await serve(app, ssl_context=None, host="127.0.0.1")`` → the port it listens on."""


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(
        app: web.Application, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
        await site.start()
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def recording_app(
    seen: Seen, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.Application:
    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.requests.append((request.method, request.path, list(request.raw_headers), body, peer))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", record)
    return app


async def hello(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"hello", headers={"X-Served": request.path})


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve_raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[int]]]:
    """A raw TCP server scripting the bytes of an answer; its connections are cut at the
    end of the test."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: RawHandler) -> int:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pki:
    ca: trustme.CA
    server: ssl.SSLContext

    def trusting(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("registry.test", "localhost", "127.0.0.1", "::1").configure_cert(server)
    return Pki(ca=ca, server=server)


def transports(context: ssl.SSLContext | None = None) -> list[httpx.AsyncBaseTransport]:
    """httpx's own transport and the aiohttp one, to compare."""
    return [
        httpx.AsyncHTTPTransport(verify=context if context is not None else True),
        AiohttpTransport(context),
    ]


async def send(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, *, timeout: httpx.Timeout = FAST
) -> httpx.Response:
    """``request`` through ``transport`` the way the registry client sends, read whole."""
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


# -- what goes over the wire --------------------------------------------------------------------


async def test_get_sends_exactly_the_headers_httpx_sends(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello))
    headers = {
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/json",
        "Accept-Encoding": "identity",
        "User-Agent": "kitpin/test",
        "Authorization": "Bearer abc",
    }
    answers = []
    for transport in transports():
        request = httpx.Request(
            "GET", f"http://127.0.0.1:{port}/v2/a/b/manifests/v1", headers=headers
        )
        answers.append(await send(transport, request))

    assert seen.headers(0) == seen.headers(1)
    assert seen.headers(1) == [
        (b"Host", f"127.0.0.1:{port}".encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    ours = answers[1]
    assert (ours.status_code, ours.content, ours.http_version, ours.reason_phrase) == (
        200,
        b"hello",
        "HTTP/1.1",
        "OK",
    )
    assert ours.headers["x-served"] == "/v2/a/b/manifests/v1"


async def test_bare_get_gets_no_default_headers(serve: Serve) -> None:
    """No Accept, Accept-Encoding or User-Agent of aiohttp's own: only Host, as httpx."""
    seen = Seen()
    port = await serve(recording_app(seen, hello))
    for transport in transports():
        await send(transport, httpx.Request("GET", f"http://127.0.0.1:{port}/bare"))
    assert seen.headers(0) == seen.headers(1) == [(b"Host", f"127.0.0.1:{port}".encode())]


async def test_post_form_body_is_sent_as_httpx_sends_it(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello))
    form = {"grant_type": "refresh_token", "scope": "repository:a/b:pull", "service": "r t"}
    for transport in transports():
        request = httpx.Request("POST", f"http://127.0.0.1:{port}/token", data=form)
        assert (await send(transport, request)).status_code == 200
    (_, _, theirs, their_body, _), (method, _, ours, body, _) = seen.requests
    assert method == "POST"
    assert (
        body
        == their_body
        == b"grant_type=refresh_token&scope=repository%3Aa%2Fb%3Apull&service=r+t"
    )
    assert ours == theirs
    assert (b"Content-Type", b"application/x-www-form-urlencoded") in ours


async def test_empty_post_sends_content_length_zero_like_httpx(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello))
    for transport in transports():
        await send(transport, httpx.Request("POST", f"http://127.0.0.1:{port}/token"))
    assert seen.headers(0) == seen.headers(1)
    assert (b"Content-Length", b"0") in seen.headers(1)


async def test_streamed_request_body_is_sent_chunked(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello))

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    request = httpx.Request("PUT", f"http://127.0.0.1:{port}/up", content=parts())
    assert (await send(AiohttpTransport(), request)).status_code == 200
    assert seen.requests[0][3] == b"abcdef"
    assert (b"Transfer-Encoding", b"chunked") in seen.headers(0)


async def test_no_cookies_are_kept_or_sent(serve: Serve) -> None:
    seen = Seen()

    async def cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.set_cookie("session", "s3cret")
        return response

    port = await serve(recording_app(seen, cookie))
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/c")
            response = await client.send(request)
            assert response.headers["set-cookie"].startswith("session=s3cret")
    assert all(name.lower() != b"cookie" for name, _ in seen.headers(1))


async def test_redirects_are_not_followed(serve: Serve) -> None:
    seen = Seen()

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    port = await serve(recording_app(seen, redirect))
    response = await send(AiohttpTransport(), httpx.Request("GET", f"http://127.0.0.1:{port}/a"))
    assert response.status_code == 307
    assert response.headers["location"] == "/elsewhere"
    assert [r[1] for r in seen.requests] == ["/a"]


# -- what comes back ----------------------------------------------------------------------------


async def test_repeated_headers_stay_repeated(serve: Serve) -> None:
    async def challenge(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=401, reason="Unauthorized", text="{}")
        response.headers.add("WWW-Authenticate", 'Bearer realm="https://a.example/token"')
        response.headers.add("WWW-Authenticate", 'Basic realm="registry"')
        response.headers.add("Link", "</v2/a>; rel=next")
        response.headers.add("Link", "</v2/b>; rel=prev")
        return response

    port = await serve(recording_app(Seen(), challenge))
    answers = [
        await send(t, httpx.Request("GET", f"http://127.0.0.1:{port}/v2/")) for t in transports()
    ]
    theirs, ours = answers
    assert ours.status_code == 401
    assert ours.reason_phrase == "Unauthorized"
    assert ours.headers.get_list("www-authenticate") == [
        'Bearer realm="https://a.example/token"',
        'Basic realm="registry"',
    ]
    assert ours.headers.get_list("link") == ["</v2/a>; rel=next", "</v2/b>; rel=prev"]
    assert ours.headers.multi_items() == theirs.headers.multi_items()


async def test_gzip_body_is_left_to_httpx_to_decode(serve: Serve) -> None:
    document = b'{"schemaVersion": 2}' * 200
    compressed = gzip.compress(document)

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": OCI_MANIFEST},
        )

    port = await serve(recording_app(Seen(), gzipped))
    results = []
    for transport in transports():
        async with httpx.AsyncClient(transport=transport) as client:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/m")
            async with client.stream("GET", request.url) as raw:
                wire = b"".join([part async for part in raw.aiter_raw()])
            decoded = await client.send(request)
            results.append((wire, decoded.content, decoded.headers["content-encoding"]))
    assert results[0] == results[1] == (compressed, document, "gzip")


async def test_body_is_streamed_lazily_and_an_early_close_drops_the_connection(
    serve: Serve,
) -> None:
    seen = Seen()
    cut = asyncio.Event()
    chunk = b"x" * (64 * 1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path != "/big":
            return await hello(request)
        response = web.StreamResponse(headers={"Content-Length": str(len(chunk) * 128)})
        await response.prepare(request)
        try:
            for _ in range(128):  # 8 MiB, far more than socket buffers hold
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            cut.set()
        return response

    port = await serve(recording_app(seen, handler))
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport, timeout=FAST) as client:
        first = await client.get(f"http://127.0.0.1:{port}/small")
        assert first.content == b"hello"
        big = await client.send(httpx.Request("GET", f"http://127.0.0.1:{port}/big"), stream=True)
        read = 0
        async for part in big.aiter_raw():
            read += len(part)
            if read >= 256 * 1024:
                break
        await big.aclose()
        await asyncio.wait_for(cut.wait(), 5)  # the server saw its connection closed

        again = await client.get(f"http://127.0.0.1:{port}/small")
        assert again.content == b"hello"
        assert (await client.get(f"http://127.0.0.1:{port}/small")).content == b"hello"

    assert read < len(chunk) * 128
    small, big_peer = seen.peers("/small"), seen.peers("/big")
    assert small[0] == big_peer[0]  # the first connection was reused for /big ...
    assert small[1] != big_peer[0]  # ... and not after /big was abandoned
    assert small[2] == small[1]  # a body read to its end keeps its connection


async def test_registry_client_size_cap_aborts_and_the_next_request_works(
    serve: Serve,
) -> None:
    body = modelkit_manifest()
    seen = Seen()

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/huge"):
            response = web.StreamResponse(headers={"Content-Type": OCI_MANIFEST})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for _ in range(160):  # 10 MiB, no Content-Length
                    await response.write(b" " * (64 * 1024))
            except (ConnectionError, RuntimeError):
                pass
            return response
        if request.path == "/v2/":
            return web.json_response({})
        return web.Response(
            body=body,
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(body)},
        )

    port = await serve(recording_app(seen, registry))
    host = f"127.0.0.1:{port}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})
    async with RegistryClient(policy, resolve=FakeDNS()) as client:
        with pytest.raises(errors.ManifestTooLargeError):
            await client.get_manifest(ref(registry=host, tag="huge"))
        manifest = await client.get_manifest(ref(registry=host, tag="v1"))
    assert manifest.digest == sha256(body)


# -- errors -------------------------------------------------------------------------------------


async def test_refused_connection_is_connect_error() -> None:
    url = f"http://127.0.0.1:{refused_port()}/v2/"
    for transport in transports():
        with pytest.raises(httpx.ConnectError) as caught:
            await send(transport, httpx.Request("GET", url))
        assert str(caught.value)  # httpx: "All connection attempts failed"; aiohttp: the errno


async def test_registry_client_says_a_refused_registry_is_unreachable() -> None:
    host = f"127.0.0.1:{refused_port()}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})
    async with RegistryClient(policy, resolve=FakeDNS()) as client:
        with pytest.raises(errors.UnreachableError) as caught:
            await client.get_manifest(ref(registry=host))
    assert f"cannot talk to {host} (ConnectError: " in caught.value.message


async def test_unverifiable_certificate_is_connect_error_with_the_ssl_error_in_the_chain(
    serve: Serve, pki: Pki
) -> None:
    port = await serve(recording_app(Seen(), hello), ssl_context=pki.server)
    url = f"https://127.0.0.1:{port}/v2/"
    messages = []
    for transport in transports(ssl.create_default_context()):  # the system CAs only
        with pytest.raises(httpx.ConnectError) as caught:
            await send(transport, httpx.Request("GET", url))
        assert _tls_verification_failed(caught.value)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "CERTIFICATE_VERIFY_FAILED" in messages[1]


async def test_registry_client_names_ca_file_when_tls_verification_fails(
    serve: Serve, pki: Pki
) -> None:
    port = await serve(recording_app(Seen(), hello), ssl_context=pki.server)
    async with RegistryClient(hosts.HostPolicy(), resolve=FakeDNS()) as client:
        with pytest.raises(errors.UnreachableError) as caught:
            await client.get_manifest(ref(registry=f"127.0.0.1:{port}"))
    assert f"TLS verification of 127.0.0.1:{port} failed" in caught.value.message
    assert "configure caFile" in caught.value.message


async def test_tls_with_the_right_ca_round_trips(serve: Serve, pki: Pki) -> None:
    port = await serve(recording_app(Seen(), hello), ssl_context=pki.server)
    response = await send(
        AiohttpTransport(pki.trusting()), httpx.Request("GET", f"https://localhost:{port}/x")
    )
    assert (response.status_code, response.content) == (200, b"hello")


async def test_server_that_stalls_before_answering_is_read_timeout(serve_raw: Any) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    port = await serve_raw(stall)
    timeout = httpx.Timeout(2.0, read=0.2)
    for transport in transports():
        with pytest.raises(httpx.ReadTimeout):
            await send(
                transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"), timeout=timeout
            )


async def test_server_that_stalls_mid_body_is_read_timeout(serve_raw: Any) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        await asyncio.sleep(30)

    port = await serve_raw(stall)
    timeout = httpx.Timeout(2.0, read=0.2)
    for transport in transports():
        with pytest.raises(httpx.ReadTimeout):
            await send(
                transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"), timeout=timeout
            )


async def test_connect_that_never_completes_is_connect_timeout() -> None:
    """A listener whose accept queue is full: the kernel drops the SYNs, connect hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                try:
                    filler.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
            await asyncio.sleep(0.05)
            timeout = httpx.Timeout(2.0, connect=0.2)
            for transport in transports():
                with pytest.raises(httpx.ConnectTimeout):
                    await send(
                        transport,
                        httpx.Request("GET", f"http://127.0.0.1:{port}/"),
                        timeout=timeout,
                    )
        finally:
            for filler in fillers:
                filler.close()


async def test_slow_connection_setup_is_connect_timeout() -> None:
    async def slow_dns(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")  # pragma: no cover

    transport = AiohttpTransport(resolve=slow_dns)
    timeout = httpx.Timeout(2.0, connect=0.1, pool=0.1)
    with pytest.raises(httpx.ConnectTimeout):
        await send(transport, httpx.Request("GET", "http://registry.test/"), timeout=timeout)


async def test_waiting_too_long_for_a_pooled_connection_is_connect_timeout(serve: Serve) -> None:
    """aiohttp does not tell waiting for a connection from making one: ``pool`` + ``connect``
    bound both, as a ConnectTimeout (the registry client maps every timeout alike)."""
    release = asyncio.Event()

    async def holding(request: web.Request) -> web.StreamResponse:
        if request.path != "/held":
            return await hello(request)
        response = web.StreamResponse(headers={"Content-Length": "10"})
        await response.prepare(request)
        await response.write(b"01234")
        await release.wait()
        await response.write(b"56789")
        return response

    port = await serve(recording_app(Seen(), holding))
    transport = AiohttpTransport(limit_per_host=1)
    timeout = httpx.Timeout(2.0, connect=0.1, pool=0.1)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        held = await client.send(httpx.Request("GET", f"http://127.0.0.1:{port}/held"), stream=True)
        try:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{port}/b")
        finally:
            release.set()
            await held.aread()
            await held.aclose()
        assert (await client.get(f"http://127.0.0.1:{port}/c")).status_code == 200


async def test_server_closing_before_answering_is_remote_protocol_error(serve_raw: Any) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    port = await serve_raw(hang_up)
    for transport in transports():
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_body_cut_short_is_remote_protocol_error(serve_raw: Any, answer: bytes) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    port = await serve_raw(cut)
    for transport in transports():
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"))


async def test_connection_reset_mid_body_is_a_transport_error(serve_raw: Any) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    port = await serve_raw(reset)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await send(AiohttpTransport(), httpx.Request("GET", f"http://127.0.0.1:{port}/"))


async def test_malformed_answer_is_remote_protocol_error(serve_raw: Any) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready, or so\r\n\r\n")
        await writer.drain()

    port = await serve_raw(garbage)
    for transport in transports():
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"))


async def test_registry_client_maps_a_read_timeout(serve_raw: Any) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    host = f"127.0.0.1:{await serve_raw(stall)}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})
    timeout = httpx.Timeout(2.0, read=0.2)
    async with RegistryClient(policy, resolve=FakeDNS(), timeout=timeout) as client:
        with pytest.raises(errors.RegistryTimeoutError) as caught:
            await client.get_manifest(ref(registry=host))
    assert "(ReadTimeout)" in caught.value.message


# -- pooling ------------------------------------------------------------------------------------


async def test_connections_per_host_are_limited(serve: Serve) -> None:
    seen = Seen()
    in_flight = 0
    most = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return await hello(request)

    port = await serve(recording_app(seen, slow))
    transport = AiohttpTransport(limit_per_host=3)
    async with httpx.AsyncClient(transport=transport, timeout=FAST) as client:
        answers = await asyncio.gather(
            *(client.get(f"http://127.0.0.1:{port}/{i}") for i in range(12))
        )
    assert [a.status_code for a in answers] == [200] * 12
    assert most == 3
    assert len(set(seen.peers())) == 3


async def test_closed_transport_refuses_requests(serve: Serve) -> None:
    port = await serve(recording_app(Seen(), hello))
    transport = AiohttpTransport()
    assert (await send(transport, httpx.Request("GET", f"http://127.0.0.1:{port}/"))).is_success
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await transport.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{port}/"))


# -- where connections go -----------------------------------------------------------------------


@dataclass
class Lookups:
    """A ``resolve`` from a table, recording its calls."""

    table: dict[str, Sequence[str] | BaseException]
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        answer = self.table[host]
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def test_a_name_is_dialled_at_the_address_resolve_gives(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello))
    lookups = Lookups({"registry.test": ["127.0.0.1"]})
    async with httpx.AsyncClient(transport=AiohttpTransport(resolve=lookups)) as client:
        for _ in range(2):
            response = await client.get(f"http://registry.test:{port}/v2/")
            assert response.content == b"hello"
    assert lookups.calls == [("registry.test", port)]  # the connection was reused
    assert (b"Host", f"registry.test:{port}".encode()) in seen.headers()


async def test_tls_to_a_name_verifies_the_name_not_the_address(serve: Serve, pki: Pki) -> None:
    port = await serve(recording_app(Seen(), hello), ssl_context=pki.server)
    lookups = Lookups({"registry.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    url = f"https://registry.test:{port}/v2/"
    response = await send(
        AiohttpTransport(pki.trusting(), resolve=lookups), httpx.Request("GET", url)
    )
    assert response.content == b"hello"
    with pytest.raises(httpx.ConnectError) as caught:  # the certificate is not for other.test
        await send(
            AiohttpTransport(pki.trusting(), resolve=lookups),
            httpx.Request("GET", f"https://other.test:{port}/v2/"),
        )
    assert _tls_verification_failed(caught.value)


async def test_a_refused_answer_fails_the_request_with_resolves_own_error(serve: Serve) -> None:
    class RefusedError(Exception):
        pass

    seen = Seen()
    port = await serve(recording_app(seen, hello))
    lookups = Lookups({"evil.test": RefusedError("169.254.169.254 is denied")})
    with pytest.raises(RefusedError):
        await send(
            AiohttpTransport(resolve=lookups), httpx.Request("GET", f"http://evil.test:{port}/")
        )
    assert seen.requests == []


@pytest.mark.parametrize(
    "answer",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), [], ["not-an-address"]],
    ids=["no-such-name", "no-address", "not-an-address"],
)
async def test_a_name_that_does_not_resolve_is_connect_error(answer: Any) -> None:
    lookups = Lookups({"missing.test": answer})
    with pytest.raises(httpx.ConnectError):
        await send(AiohttpTransport(resolve=lookups), httpx.Request("GET", "http://missing.test/"))


async def test_ip_literals_are_not_looked_up(serve: Serve) -> None:
    port4 = await serve(recording_app(Seen(), hello))
    port6 = await serve(recording_app(Seen(), hello), host="::1")
    lookups = Lookups({})
    async with httpx.AsyncClient(transport=AiohttpTransport(resolve=lookups)) as client:
        for url in (f"http://127.0.0.1:{port4}/", f"http://[::1]:{port6}/"):
            assert (await client.get(url)).content == b"hello"
    assert lookups.calls == []


async def test_a_name_resolving_to_ipv6_is_dialled_over_ipv6(serve: Serve) -> None:
    seen = Seen()
    port = await serve(recording_app(seen, hello), host="::1")
    lookups = Lookups({"six.test": ["::1"]})
    response = await send(
        AiohttpTransport(resolve=lookups), httpx.Request("GET", f"http://six.test:{port}/")
    )
    assert response.content == b"hello"
    assert seen.peers()[0][0] == "::1"


# -- the registry client's default --------------------------------------------------------------


def manifest_app(body: bytes, seen: Seen) -> web.Application:
    async def registry(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        return web.Response(
            body=body,
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(body)},
        )

    return recording_app(seen, registry)


async def test_registry_client_connects_where_its_checked_dns_said(
    serve: Serve, pki: Pki, tmp_path: Any
) -> None:
    """The default transport dials the addresses of the client's own ``resolve`` (whose
    answers the host policy checked): ``registry.test`` exists only in that table."""
    body = modelkit_manifest()
    seen = Seen()
    port = await serve(manifest_app(body, seen), ssl_context=pki.server)
    ca_file = tmp_path / "ca.pem"
    pki.ca.cert_pem.write_to_path(str(ca_file))
    host = f"registry.test:{port}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(ca_file=str(ca_file))})
    dns = FakeDNS(table={"registry.test": ["127.0.0.1"]})
    async with RegistryClient(policy, resolve=dns) as client:
        manifest = await client.get_manifest(ref(registry=host))
    assert manifest.digest == sha256(body)
    assert [r[1] for r in seen.requests] == ["/v2/", "/v2/team/model/manifests/v1"]


async def test_registry_client_refuses_a_connection_to_an_address_the_policy_denies(
    serve: Serve,
) -> None:
    """A name that passed the check and then resolves into a denied network when the
    connection is made (DNS rebinding) fails like the check itself, and nothing is sent."""
    seen = Seen()
    port = await serve(manifest_app(modelkit_manifest(), seen))
    host = f"registry.test:{port}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})

    answers = iter([["127.0.0.1"]])

    async def rebinding(name: str, port: int) -> Sequence[str]:
        return next(answers, ["169.254.169.254"])

    async def denied(name: str, port: int) -> Sequence[str]:
        return ["169.254.169.254"]

    messages = []
    for resolve in (rebinding, denied):
        async with RegistryClient(policy, resolve=resolve) as client:
            with pytest.raises(errors.HostNotAllowedError) as caught:
                await client.get_manifest(ref(registry=host))
        assert caught.value.registry == host
        assert caught.value.repository == "team/model"
        messages.append(caught.value.message)
    assert messages[0] == messages[1]
    assert "resolves to 169.254.169.254" in messages[0]
    assert seen.requests == []


async def test_registry_client_keeps_httpx_proxy_from_the_environment(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind ``HTTP_PROXY``/``HTTPS_PROXY`` the client sends as before: through httpx's
    transport, which honours them (aiohttp's transport never reads the environment)."""
    body = modelkit_manifest()
    seen = Seen()
    proxy_port = await serve(manifest_app(body, seen))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    host = "registry.test:5000"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})
    async with RegistryClient(policy, resolve=FakeDNS()) as client:
        manifest = await client.get_manifest(ref(registry=host))
    assert manifest.digest == sha256(body)
    assert [r[1] for r in seen.requests] == ["/v2/", "/v2/team/model/manifests/v1"]
    assert (b"Host", host.encode()) in seen.headers()
