"""The resolver over the real RegistryClient (scripted behind httpx.MockTransport): hostile
answers reach stale-if-error as the documented errors, so an answer is never papered over.

A tag deleted while its 404 body is JSON nested thousands of levels deep used to raise
``RecursionError`` in the client; the resolver wrapped it as a plain RegistryError (an
"unexpected failure", stale-eligible) and kept serving the deleted tag's digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from resolver_fakes import FakeClock, make_ref

from controller import errors
from controller.registry import hosts
from controller.registry.client import RegistryClient
from controller.resolver import Resolver, ResolverSettings

DEEP = b"[" * 5000 + b"]" * 5000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest_bytes() -> bytes:
    config = b'{"manifestVersion": "1.0", "package": {"name": "demo"}}'
    return json.dumps(
        {
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.kitops.modelkit.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()


@dataclass
class Registry:
    """Serves the manifest until ``answer`` is set; then that, for every request."""

    answer: httpx.Response | None = None
    requests: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if request.url.path == "/v2/":
            return httpx.Response(200, json={})
        if self.answer is not None:
            return self.answer
        return httpx.Response(200, content=manifest_bytes(), headers={"Content-Type": OCI_MANIFEST})


async def _resolve_nothing(host: str, port: int) -> list[str]:
    return ["10.0.0.7"]


@pytest.fixture
async def setup(clock: FakeClock) -> AsyncIterator[tuple[Resolver, Registry]]:
    registry = Registry()
    client = RegistryClient(
        hosts.HostPolicy(),
        transport=httpx.MockTransport(registry),
        resolve=_resolve_nothing,
    )
    resolver = Resolver(
        client, settings=ResolverSettings(ttl=60.0, stale_if_error=300.0), clock=clock
    )
    yield resolver, registry
    await resolver.aclose()
    await client.aclose()


async def test_a_deleted_tag_with_a_deeply_nested_404_body_is_not_served_stale(
    setup: tuple[Resolver, Registry], clock: FakeClock
) -> None:
    resolver, registry = setup
    ref = make_ref()
    fresh = await resolver.resolve(ref)
    assert fresh.digest == "sha256:" + hashlib.sha256(manifest_bytes()).hexdigest()

    clock.advance(61.0)  # expired, within stale-if-error
    registry.answer = httpx.Response(404, content=DEEP)
    with pytest.raises(errors.NotFoundError):
        await resolver.resolve(ref)
    with pytest.raises(errors.NotFoundError):  # the negative entry, not the stale digest
        await resolver.resolve(ref)


async def test_a_deeply_nested_manifest_is_a_bad_response_not_served_stale(
    setup: tuple[Resolver, Registry], clock: FakeClock
) -> None:
    resolver, registry = setup
    ref = make_ref()
    await resolver.resolve(ref)

    clock.advance(61.0)
    registry.answer = httpx.Response(200, content=DEEP, headers={"Content-Type": OCI_MANIFEST})
    with pytest.raises(errors.BadResponseError):
        await resolver.resolve(ref)


async def test_a_429_with_a_nested_body_and_a_malformed_retry_after_serves_stale(
    setup: tuple[Resolver, Registry], clock: FakeClock
) -> None:
    """A rate limit says nothing about the answer: the last verified digest is served."""
    resolver, registry = setup
    ref = make_ref()
    fresh = await resolver.resolve(ref)

    clock.advance(61.0)
    registry.answer = httpx.Response(
        429, content=DEEP, headers=[(b"Retry-After", "\u00b2".encode())]
    )
    stale = await resolver.resolve(ref)
    assert stale.stale is True
    assert stale.digest == fresh.digest
    assert stale.stale_reason is not None and "rate limiting kitpin (429)" in stale.stale_reason
