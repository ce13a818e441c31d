"""Test doubles for the registry client tests: a scripted registry behind
``httpx.MockTransport``, a fake DNS, a fake clock, and ModelKit-shaped payloads.

A scripted registry answers ``GET /v2/`` (the client's API version check, its "ping") as a
real one does: as it answers an anonymous request (a ``401`` with its challenge when it wants
auth, a ``404``/``5xx``/redirect/network error when that is what it serves), except that a
success is the ``200 {}`` of ``/v2/``, not the handler's manifest. ``make_client(v2=...)``
scripts ``/v2/`` on its own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from controller import refs
from controller.registry import hosts
from controller.registry.client import RegistryClient

KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

Handler = Callable[[httpx.Request], httpx.Response]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def kitfile_bytes() -> bytes:
    return json.dumps(
        {"manifestVersion": "1.0", "package": {"name": "demo"}, "model": {"path": "model.gguf"}},
        separators=(",", ":"),
    ).encode()


def modelkit_manifest(config: bytes | None = None) -> bytes:
    """A KitOps ModelKit manifest as kit writes it (no mediaType, no artifactType)."""
    config = kitfile_bytes() if config is None else config
    return json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": KITOPS_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.kitops.modelkit.model.v1.tar",
                    "digest": "sha256:" + "b" * 64,
                    "size": 1024,
                }
            ],
        },
        indent=3,  # deliberately not canonical: the digest is of the bytes as served
    ).encode()


def ref(
    registry: str = "reg.example",
    repository: str = "team/model",
    tag: str = "v1",
    digest: str | None = None,
) -> refs.Reference:
    return refs.Reference(
        registry=registry,
        repository=repository,
        tag=tag,
        tag_explicit=True,
        digest=digest,
        grammar="kit",
        name=f"{registry}/{repository}",
    )


def manifest_response(body: bytes, *, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200, content=body, headers={"Content-Type": OCI_MANIFEST, **(headers or {})}
    )


@dataclass
class FakeClock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeDNS:
    """``resolve(host, port)`` from a table; unknown names resolve to a private address."""

    table: dict[str, Sequence[str] | OSError] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        answer = self.table.get(host, ["10.0.0.7"])
        if isinstance(answer, OSError):
            raise answer
        return answer


def is_ping(request: httpx.Request) -> bool:
    """Whether ``request`` is the API version check, ``GET /v2/``."""
    return request.method == "GET" and request.url.path == "/v2/"


def api_root_ok() -> httpx.Response:
    """What an open registry answers to ``GET /v2/``."""
    return httpx.Response(200, json={}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


@dataclass
class Recorder:
    """Wraps a handler, recording every request that reached the transport (pings too).
    ``v2``: answers ``GET /v2/`` instead of the handler (see the module docstring)."""

    handler: Handler
    v2: Handler | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if not is_ping(request):
            return self.handler(request)
        if self.v2 is not None:
            return self.v2(request)
        answer = self.handler(request)
        return api_root_ok() if 200 <= answer.status_code < 300 else answer

    def pings(self) -> list[httpx.Request]:
        """The API version checks, ``GET /v2/``."""
        return [r for r in self.requests if is_ping(r)]

    def calls(self) -> list[httpx.Request]:
        """Every request but the API version checks."""
        return [r for r in self.requests if not is_ping(r)]

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.requests]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.requests]


def make_client(
    handler: Handler,
    *,
    policy: hosts.HostPolicy | None = None,
    clock: FakeClock | None = None,
    dns: FakeDNS | None = None,
    v2: Handler | None = None,
    **kwargs: object,
) -> tuple[RegistryClient, Recorder]:
    recorder = Recorder(handler, v2)
    client = RegistryClient(
        policy,
        transport=httpx.MockTransport(recorder),
        resolve=dns if dns is not None else FakeDNS(),
        clock=clock if clock is not None else FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )
    return client, recorder


class CountingStream(httpx.AsyncByteStream):
    """A response body of ``chunks`` chunks of ``size`` bytes that counts what was read."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.read = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield b" " * self.size
