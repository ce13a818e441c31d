"""Pull secrets of the object's own namespace, read by name and cached; the sync cache path;
unusable secrets skipped, reported once and remembered; the caches bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import pytest

from controller import kubecreds
from controller.kubecreds import NamespaceCredentials, SecretRead
from controller.registry.credentials import Keychain


def dockerconfigjson(registry: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return base64.b64encode(json.dumps({"auths": {registry: {"auth": auth}}}).encode()).decode()


class FakeReader:
    """Secrets and ServiceAccounts by (namespace, name); counts reads."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], SecretRead] = {}
        self.accounts: dict[tuple[str, str], list[str]] = {}
        self.reads = 0

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        self.reads += 1
        return self.accounts.get((namespace, name))

    async def secret(self, namespace: str, name: str) -> SecretRead | None:
        self.reads += 1
        return self.secrets.get((namespace, name))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def secret(registry: str, user: str, version: str = "") -> SecretRead:
    return SecretRead(
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": dockerconfigjson(registry, user, "pw")},
        resource_version=version,
    )


async def test_own_namespace_secret_then_service_account_then_central() -> None:
    reader = FakeReader()
    reader.secrets[("team-a", "regcred")] = secret("reg.example", "alice")
    reader.secrets[("team-a", "sa-cred")] = secret("other.example", "sa-user")
    reader.accounts[("team-a", "default")] = ["sa-cred"]
    central = Keychain.from_dockerconfigjson(
        base64.b64decode(dockerconfigjson("central.example", "ops", "pw")), source="central"
    )
    creds = NamespaceCredentials(reader, central=central, clock=Clock())
    spec = {"imagePullSecrets": [{"name": "regcred"}]}

    a = await creds.lookup(
        namespace="team-a", registry="reg.example", repository="m", pod_spec=spec
    )
    assert a is not None and a.username == "alice"
    sa = await creds.lookup(
        namespace="team-a", registry="other.example", repository="m", pod_spec=spec
    )
    assert sa is not None and sa.username == "sa-user"
    c = await creds.lookup(
        namespace="team-a", registry="central.example", repository="m", pod_spec=spec
    )
    assert c is not None and c.username == "ops"


async def test_a_secret_name_from_another_namespace_is_never_used() -> None:
    reader = FakeReader()
    reader.secrets[("team-a", "regcred")] = secret("reg.example", "alice")
    creds = NamespaceCredentials(reader, clock=Clock())
    spec = {"imagePullSecrets": [{"name": "regcred"}]}
    assert (
        await creds.lookup(
            namespace="team-b", registry="reg.example", repository="m", pod_spec=spec
        )
        is None
    )


async def test_cached_path_answers_without_reads_until_the_ttl() -> None:
    reader = FakeReader()
    reader.secrets[("ns", "regcred")] = secret("reg.example", "alice")
    clock = Clock()
    creds = NamespaceCredentials(reader, ttl=30.0, clock=clock)
    spec = {"imagePullSecrets": [{"name": "regcred"}]}
    args: dict[str, Any] = {
        "namespace": "ns",
        "registry": "reg.example",
        "repository": "m",
        "pod_spec": spec,
    }

    assert creds.lookup_cached(**args) == (False, None)  # nothing read yet
    await creds.lookup(**args)
    reads = reader.reads
    hit, credential = creds.lookup_cached(**args)
    assert hit and credential is not None and credential.username == "alice"
    assert reader.reads == reads
    clock.now += 31.0
    assert creds.lookup_cached(**args) == (False, None)  # stale: the async path reads again


class GatedReader(FakeReader):
    """A FakeReader whose reads wait for ``gate`` (the apiserver is slow) or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        self.reads += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.accounts.get((namespace, name))

    async def secret(self, namespace: str, name: str) -> SecretRead | None:
        self.reads += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.secrets.get((namespace, name))


async def _settle_until(check: Any, *, guard: float = 5.0) -> None:
    """Let the event loop run until ``check()`` holds (``guard`` only stops a broken test)."""
    async with asyncio.timeout(guard):
        while not check():
            await asyncio.sleep(0)


async def test_concurrent_lookups_in_a_namespace_read_each_object_once() -> None:
    reader = GatedReader()
    reader.secrets[("team-a", "regcred")] = secret("reg.example", "alice")
    reader.accounts[("team-a", "default")] = ["regcred"]
    creds = NamespaceCredentials(reader, clock=Clock())

    lookups = [
        asyncio.create_task(
            creds.lookup(namespace="team-a", registry="reg.example", repository="m", pod_spec={})
        )
        for _ in range(50)
    ]
    await _settle_until(lambda: reader.reads == 1)  # the ServiceAccount, once
    reader.gate.set()
    found = await asyncio.gather(*lookups)

    assert {c.username for c in found if c is not None} == {"alice"}
    assert all(c is not None for c in found)
    assert reader.reads == 2  # one ServiceAccount read, one Secret read, for 50 Pods


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    reader = GatedReader()
    reader.secrets[("team-a", "regcred")] = secret("reg.example", "alice")
    creds = NamespaceCredentials(reader, clock=Clock())
    spec = {"imagePullSecrets": [{"name": "regcred"}], "serviceAccountName": "none"}

    first = asyncio.create_task(
        creds.lookup(namespace="team-a", registry="reg.example", repository="m", pod_spec=spec)
    )
    second = asyncio.create_task(
        creds.lookup(namespace="team-a", registry="reg.example", repository="m", pod_spec=spec)
    )
    await _settle_until(lambda: reader.reads == 1)
    first.cancel()  # its review's deadline
    reader.gate.set()
    got = await second

    assert got is not None and got.username == "alice"
    assert first.cancelled()


async def test_a_failed_read_reaches_every_caller_and_the_next_lookup_reads_again() -> None:
    reader = GatedReader()
    reader.accounts[("team-a", "default")] = []
    reader.fail = RuntimeError("apiserver unreachable")
    creds = NamespaceCredentials(reader, clock=Clock())

    lookups = [
        asyncio.create_task(
            creds.lookup(namespace="team-a", registry="reg.example", repository="m", pod_spec={})
        )
        for _ in range(3)
    ]
    await _settle_until(lambda: reader.reads == 1)
    reader.gate.set()
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert [str(r) for r in results] == ["apiserver unreachable"] * 3

    reader.fail = None
    assert (
        await creds.lookup(namespace="team-a", registry="reg.example", repository="m", pod_spec={})
        is None
    )
    assert reader.reads == 2


# -- unusable secrets -----------------------------------------------------------------------------


def nested_secret(depth: int, version: str) -> SecretRead:
    """A pull secret whose config.json nests ``depth`` objects deep."""
    document = b'{"auths": {"reg.example": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}"
    return SecretRead(
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": base64.b64encode(document).decode()},
        resource_version=version,
    )


def warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and name in r.getMessage()
    ]


async def test_a_deeply_nested_secret_is_skipped_named_once_and_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = FakeReader()
    reader.secrets[("team-a", "deep")] = nested_secret(10_000, version="7")
    reader.secrets[("team-a", "good")] = secret("reg.example", "alice")
    clock = Clock()
    creds = NamespaceCredentials(reader, ttl=30.0, clock=clock)
    spec = {"imagePullSecrets": [{"name": "deep"}, {"name": "good"}], "serviceAccountName": "x"}
    args: dict[str, Any] = {
        "namespace": "team-a",
        "registry": "reg.example",
        "repository": "m",
        "pod_spec": spec,
    }

    with caplog.at_level(logging.INFO, logger="controller.kubecreds"):
        found = await creds.lookup(**args)  # the bad one is skipped, the next one serves
        assert found is not None and found.username == "alice"
        (warning,) = warnings_about(caplog, "team-a/deep")
        assert "secret team-a/deep: nested deeper than 64 levels" in warning
        assert "\n" not in warning and "recursion" not in warning
        reads = reader.reads

        for _ in range(5):  # remembered as unusable, like a good one: no read, no parse
            await creds.lookup(**args)
        assert creds.lookup_cached(**args)[0]
        assert reader.reads == reads

        clock.now += 31.0  # read again, but unchanged (resourceVersion 7): not reported again
        await creds.lookup(**args)
        assert reader.reads > reads
        assert len(warnings_about(caplog, "team-a/deep")) == 1

        reader.secrets[("team-a", "deep")] = secret("reg.example", "fixed", version="8")
        clock.now += 31.0  # fixed (resourceVersion 8): read and used
        fixed = await creds.lookup(**args)
    assert fixed is not None and fixed.username == "fixed"


async def test_an_unusable_secret_without_a_resource_version_is_parsed_at_each_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = FakeReader()
    reader.secrets[("team-a", "deep")] = nested_secret(100, version="")
    clock = Clock()
    creds = NamespaceCredentials(reader, ttl=30.0, clock=clock)
    spec = {"imagePullSecrets": [{"name": "deep"}], "serviceAccountName": "x"}
    with caplog.at_level(logging.WARNING, logger="controller.kubecreds"):
        for _ in range(3):
            assert (
                await creds.lookup(
                    namespace="team-a", registry="reg.example", repository="m", pod_spec=spec
                )
                is None
            )
            clock.now += 31.0
    assert len(warnings_about(caplog, "team-a/deep")) == 3


async def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pods naming ever new secrets: the oldest entries go, so the first is read again."""
    monkeypatch.setattr(kubecreds, "MAX_CACHED", 3)
    reader = FakeReader()
    creds = NamespaceCredentials(reader, clock=Clock())

    async def lookup(name: str) -> None:
        spec = {"imagePullSecrets": [{"name": name}], "serviceAccountName": "x"}
        await creds.lookup(namespace="ns", registry="r.example", repository="m", pod_spec=spec)

    await lookup("s0")
    reads = reader.reads
    await lookup("s0")
    assert reader.reads == reads  # cached
    for i in range(1, 10):
        await lookup(f"s{i}")
    reads = reader.reads
    await lookup("s0")
    assert reader.reads == reads + 1  # evicted: read again
