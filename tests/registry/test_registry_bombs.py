"""Compression bombs from a real HTTP server on loopback: memory stays bounded by the size
cap whatever a registry sends (manifests, config blobs, token answers, error bodies, the
``/v2/`` check), through both transports the client uses (aiohttp's, and httpx's own behind
an ``HTTP_PROXY``).

The bomb is ~2 KB on the wire, ``Content-Encoding: gzip, gzip``, and expands to 1,100 MiB.
kitpin asked for ``Accept-Encoding: identity``; before it refused other encodings, httpx
decoded the body whole, chunk by chunk, before the size cap counted a byte. The process's
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) is measured around the request.
"""

from __future__ import annotations

import gc
import gzip
import re
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from registry_fakes import OCI_MANIFEST, FakeDNS, modelkit_manifest, ref, sha256

from controller import errors
from controller.registry import hosts
from controller.registry.client import RegistryClient

MiB = 1024 * 1024
EXPANDED_MIB = 1100
"""What the bomb expands to: more than 1 GiB (the chart's memory limit is 256 MiB)."""
MAX_GROWTH_KIB = 8 * 1024
"""Peak RSS may grow this much while bombed: sockets, buffers, a few small objects."""

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# -- the bomb -----------------------------------------------------------------------------------


def gzip_of_zeros(mib: int) -> bytes:
    """A gzip member of ``mib`` MiB of zeros, built without compressing them all: after a
    full flush deflate starts afresh, so every MiB of zeros compresses to the same bytes."""
    zeros = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert again == piece
    end = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mib * MiB) & 0xFFFF_FFFF)
    return header + piece * mib + end + trailer


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """``gzip(gzip(1,100 MiB of zeros))``: what ``Content-Encoding: gzip, gzip`` decodes."""
    assert gzip.decompress(gzip_of_zeros(3)) == bytes(3 * MiB)  # the construction is right
    inner = gzip_of_zeros(EXPANDED_MIB)
    outer = gzip.compress(inner, 9)
    assert gzip.decompress(outer) == inner
    assert len(outer) < 4096
    return outer


# -- measuring ----------------------------------------------------------------------------------


def _status(field_name: str) -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"^{field_name}:\s+(\d+) kB$", text, re.MULTILINE)
    assert found is not None, f"no {field_name} in /proc/self/status"
    return int(found.group(1))


def reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs`` 5); that RSS
    in KiB."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak_rss() -> int:
    """The process's peak RSS since :func:`reset_peak_rss`, in KiB."""
    return _status("VmHWM")


# -- the registry -------------------------------------------------------------------------------


@dataclass
class BombingRegistry:
    """A registry answering ``kind``'s request with the bomb (``/v2/`` always gets one):
    ``manifest`` (200), ``config`` (200 for the blob), ``token`` (200 from the token
    service), ``error`` (404 for the manifest)."""

    kind: str
    bomb: bytes
    host: str = ""
    paths: list[str] = field(default_factory=list)

    def bombed(self, status: int = 200) -> web.Response:
        return web.Response(
            status=status,
            body=self.bomb,
            headers={"Content-Encoding": "gzip, gzip", "Content-Type": "application/json"},
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        manifest = modelkit_manifest()
        if request.path == "/v2/":
            if self.kind == "token":
                challenge = f'Bearer realm="http://{self.host}/token",service="reg"'
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
            return self.bombed()
        if request.path == "/token":
            return self.bombed()
        if "/manifests/" in request.path:
            if self.kind == "manifest":
                return self.bombed()
            if self.kind == "error":
                return self.bombed(404)
            return web.Response(
                body=manifest,
                headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(manifest)},
            )
        if "/blobs/" in request.path and self.kind == "config":
            return self.bombed()
        return web.Response(status=404)


Serve = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


EXPECTED: dict[str, type[errors.RegistryError]] = {
    "manifest": errors.BadResponseError,
    "config": errors.BadResponseError,
    "token": errors.BadResponseError,
    "error": errors.NotFoundError,
}


@pytest.mark.parametrize("transport", ["aiohttp", "httpx behind HTTP_PROXY"])
@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_a_compression_bomb_is_refused_unread_and_memory_stays_flat(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, bomb: bytes, kind: str, transport: str
) -> None:
    registry = BombingRegistry(kind=kind, bomb=bomb)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", registry.handle)
    port = await serve(app)
    if transport == "aiohttp":
        registry.host = f"127.0.0.1:{port}"
    else:  # the server is the proxy too: it answers for any host
        registry.host = "registry.test:5000"
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    policy = hosts.HostPolicy(registries={registry.host: hosts.RegistryHostConfig(plain_http=True)})
    reference = ref(registry=registry.host)

    async def attempt() -> errors.RegistryError:
        async with RegistryClient(policy, resolve=FakeDNS()) as client:
            with pytest.raises(errors.RegistryError) as caught:
                manifest = await client.get_manifest(reference)
                await client.get_config(reference, manifest)
        return caught.value

    await attempt()  # warm-up: lazy imports, first sessions
    before = reset_peak_rss()
    error = await attempt()
    growth = peak_rss() - before

    print(f"{kind} via {transport}: peak RSS grew {growth} KiB (bomb: {len(bomb)} bytes)")
    assert growth < MAX_GROWTH_KIB, f"peak RSS grew {growth} KiB while bombed"
    assert type(error) is EXPECTED[kind], error
    if kind != "error":
        assert "Content-Encoding: gzip, gzip" in error.message
        assert "Accept-Encoding: identity" in error.message
    assert error.registry == registry.host
    assert "/v2/" in registry.paths


def test_the_bomb_is_what_it_says() -> None:
    """The construction: each MiB piece inflates to a MiB of zeros (so 1,100 of them to
    1,100 MiB), checked on a small one."""
    small = gzip_of_zeros(2)
    assert len(gzip.decompress(small)) == 2 * MiB
    assert gzip.decompress(gzip.compress(small)) == small


async def test_a_json_bomb_within_the_size_cap_is_refused_undecoded(serve: Serve) -> None:
    """4 MiB of ``[{},{},...]`` is within the manifest cap, and was ~190 MiB decoded: peak
    RSS stays within the body as read (its chunks and their join) plus the usual slack."""
    body = b"[" + b"{}," * (4 * MiB // 3 - 2) + b"{}]"
    assert len(body) <= 4 * MiB

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        return web.Response(
            body=body, headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(body)}
        )

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", registry)
    host = f"127.0.0.1:{await serve(app)}"
    policy = hosts.HostPolicy(registries={host: hosts.RegistryHostConfig(plain_http=True)})

    async def attempt() -> errors.RegistryError:
        async with RegistryClient(policy, resolve=FakeDNS()) as client:
            with pytest.raises(errors.RegistryError) as caught:
                await client.get_manifest(ref(registry=host))
        return caught.value

    await attempt()
    before = reset_peak_rss()
    error = await attempt()
    growth = peak_rss() - before
    print(f"JSON bomb manifest: peak RSS grew {growth} KiB")
    assert growth < 2 * 4 * 1024 + MAX_GROWTH_KIB, f"peak RSS grew {growth} KiB"
    assert type(error) is errors.BadResponseError
    assert "more than 100000 values" in error.message
