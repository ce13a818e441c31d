"""SecretKeys: the public key a policy's ``signatures.keys[].secretRef`` names, read by name
from the apiserver (one GET, in the namespace asked for), cached, concurrent reads shared;
only the value asked for is kept, and never a private key."""

from __future__ import annotations

import asyncio
import base64
import logging

import kopf
import pytest

from controller import errors, kubeapi
from controller.kubecreds import ApiReader, SecretKeys
from tests.kubeapi.fakeapi import FakeApiServer

PATH = "/api/v1/namespaces/kitpin/secrets/cosign"
PUBLIC = b"-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"
PRIVATE = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nxyz\n-----END ...\n"


def api(server: FakeApiServer) -> kubeapi.KubeAPI[kopf.ConnectionInfo]:
    info = kopf.ConnectionInfo(server=server.server, ca_data=server.ca_pem, token="t0k3n")
    return kubeapi.KubeAPI(info)


def cosign_secret(**values: bytes) -> dict[str, object]:
    """What ``cosign generate-key-pair k8s://kitpin/cosign`` writes."""
    return {
        "kind": "Secret",
        "type": "Opaque",
        "data": {k.replace("_", "."): base64.b64encode(v).decode() for k, v in values.items()},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_reads_one_value_by_name_and_caches_it(fake_api: FakeApiServer) -> None:
    fake_api.put(
        PATH,
        cosign_secret(cosign_pub=PUBLIC, cosign_key=PRIVATE, cosign_password=b"hunter2"),
    )
    clock = Clock()
    async with api(fake_api) as client:
        keys = SecretKeys(ApiReader(client), ttl=30.0, clock=clock)
        assert keys.peek("kitpin", "cosign", "cosign.pub") is None
        assert await keys.read("kitpin", "cosign", "cosign.pub") == PUBLIC
        assert keys.peek("kitpin", "cosign", "cosign.pub") == PUBLIC  # a warm review: no GET
        assert await keys.read("kitpin", "cosign", "cosign.pub") == PUBLIC
        assert [(s.method, s.path) for s in fake_api.seen] == [("GET", PATH)]
        # what is kept: the public value only, not the private key or its password
        kept = [entry.value for entry in keys._cache.values()]
        assert kept == [PUBLIC]

        clock.now += 31  # expired: read again
        assert keys.peek("kitpin", "cosign", "cosign.pub") is None
        assert await keys.read("kitpin", "cosign", "cosign.pub") == PUBLIC
        assert len(fake_api.seen) == 2


async def test_concurrent_reads_share_one_get(fake_api: FakeApiServer) -> None:
    fake_api.put(PATH, cosign_secret(cosign_pub=PUBLIC))
    fake_api.delay = 0.1
    async with api(fake_api) as client:
        keys = SecretKeys(ApiReader(client))
        values = await asyncio.gather(
            *(keys.read("kitpin", "cosign", "cosign.pub") for _ in range(10))
        )
    assert values == [PUBLIC] * 10
    assert len(fake_api.seen) == 1


@pytest.mark.parametrize(
    ("stored", "key", "expected"),
    [
        (None, "cosign.pub", "Secret kitpin/cosign does not exist or kitpin may not read it"),
        (
            cosign_secret(other=PUBLIC),
            "cosign.pub",
            "Secret kitpin/cosign has no key 'cosign.pub' (its keys: other); set secretRef.key",
        ),
        (
            cosign_secret(cosign_key=PRIVATE),
            "cosign.key",
            "Secret kitpin/cosign key 'cosign.key' holds a private key; point secretRef.key at "
            "the public key (cosign.pub)",
        ),
        (
            {"kind": "Secret", "data": {"cosign.pub": "not base64!"}},
            "cosign.pub",
            "Secret kitpin/cosign key 'cosign.pub' is not base64",
        ),
    ],
)
async def test_what_cannot_be_used_says_why_and_is_remembered(
    fake_api: FakeApiServer, stored: dict[str, object] | None, key: str, expected: str
) -> None:
    if stored is not None:
        fake_api.put(PATH, stored)
    async with api(fake_api) as client:
        keys = SecretKeys(ApiReader(client))
        with pytest.raises(errors.ConfigError) as e:
            await keys.read("kitpin", "cosign", key)
        assert expected in str(e.value)
        cached = keys.peek("kitpin", "cosign", key)
        assert isinstance(cached, errors.ConfigError) and str(cached) == str(e.value)
        assert PRIVATE not in str([entry.value for entry in keys._cache.values()]).encode()
    assert len(fake_api.seen) == 1


async def test_forbidden_is_not_readable_and_logged_as_a_signature_key(
    fake_api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.forbidden.add(PATH)
    async with api(fake_api) as client:
        keys = SecretKeys(ApiReader(client))
        with (
            caplog.at_level(logging.INFO, logger="controller.kubecreds"),
            pytest.raises(errors.ConfigError, match="may not read it"),
        ):
            await keys.read("kitpin", "cosign", "cosign.pub")
    assert any("signature key secret kitpin/cosign not readable" in m for m in caplog.messages)
