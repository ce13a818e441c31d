"""Shared fakes of tests/tags: digests of the real shape, a clock tests step, the registry,
workloads and Events the drift watch talks to, and a book of records that applies
observations at once (the pure transitions, no writer)."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from controller import errors, kubeapi, refs, types
from controller.tags import model
from tests.kubeapi.fakeapi import FakeApiServer

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def digest(text: str) -> str:
    """``sha256:`` of ``text``: the real shape."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def key(
    tag: str = "production", repository: str = "org/llama", registry: str = "reg.example"
) -> model.TagKey:
    return model.TagKey(registry=registry, repository=repository, tag=tag)


def deployment(name: str, namespace: str = "ml") -> model.Workload:
    return model.Workload(api_version="apps/v1", kind="Deployment", namespace=namespace, name=name)


def api(server: FakeApiServer) -> kubeapi.KubeAPI[kopf.ConnectionInfo]:
    info = kopf.ConnectionInfo(server=server.server, ca_data=server.ca_pem, token="t0k3n")
    return kubeapi.KubeAPI(info)


@dataclass
class FakeClock:
    """Virtual time: monotonic seconds and wall time that move only when a test moves them or
    every task is asleep. ``sleep`` never waits for real: once the runnable tasks have run
    (a few loop turns; the fakes do no real I/O), the earliest sleeper's time is made now."""

    t: float = 1000.0
    slept: list[float] = field(default_factory=list)
    _sleepers: list[tuple[float, int, asyncio.Future[None]]] = field(default_factory=list)
    _driver: asyncio.Task[None] | None = None
    _seq: int = 0

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.t - 1000.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.t + seconds, self._seq, wake))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await wake

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(SETTLE_TURNS):
                await asyncio.sleep(0)
            if not self._sleepers:
                return
            when, _, wake = heapq.heappop(self._sleepers)
            self.t = max(self.t, when)
            if not wake.done():
                wake.set_result(None)


SETTLE_TURNS = 30


@dataclass
class FakeRegistry:
    """Tags and digests a test sets; every request recorded with the clock's time."""

    clock: FakeClock
    tags: dict[str, str] = field(default_factory=dict)
    """``registry/repository:tag`` → digest."""
    digests: set[str] = field(default_factory=set)
    """``registry/repository@digest`` that exist (a tag's digest exists too)."""
    failing: set[str] = field(default_factory=set)
    """Registries that answer 503 (an unexpected error)."""
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, HEAD|GET, canonical reference)."""

    def exists(self, ref: refs.Reference) -> str | None:
        if ref.registry in self.failing:
            raise errors.UnreachableError(f"{ref.registry}: 503")
        if ref.digest is None:
            return self.tags.get(f"{ref.registry}/{ref.repository}:{ref.tag}")
        name = f"{ref.registry}/{ref.repository}"
        tagged = {d for t, d in self.tags.items() if t.startswith(name + ":")}
        return (
            ref.digest if ref.digest in tagged or f"{name}@{ref.digest}" in self.digests else None
        )

    async def head_digest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> str:
        self.calls.append((self.clock(), "HEAD", ref.canonical))
        found = self.exists(ref)
        if found is None:
            raise errors.NotFoundError(f"{ref.canonical}: not found")
        return found

    async def get_manifest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> types.Manifest:
        self.calls.append((self.clock(), "GET", ref.canonical))
        found = self.exists(ref)
        if found is None:
            raise errors.NotFoundError(f"{ref.canonical}: not found")
        return types.Manifest(
            digest=found,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=1,
            format="kitops-modelkit",
        )

    def requests(self, method: str | None = None) -> list[tuple[float, str, str]]:
        return [c for c in self.calls if method is None or c[1] == method]


ENV_POINTER = "/spec/template/spec/containers/0/env/0/value"
"""Where :meth:`FakeWorkloads.add` puts the reference."""


@dataclass
class FakeWorkloads:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By ``Kind/namespace/name``."""
    reads: list[str] = field(default_factory=list)
    """Every ``get``, by workload key."""
    replaced: list[dict[str, Any]] = field(default_factory=list)
    """Every object a ``replace`` stored."""
    refuse: Exception | None = None
    """Raised by the next ``replace`` instead of storing (then cleared)."""

    def add(
        self, workload: model.Workload, pinned: str, *, follows: bool = False
    ) -> dict[str, Any]:
        """A workload kitpin pinned to ``pinned`` (with its ``kitpin.dev/pinned`` record);
        ``follows``: annotated ``kitpin.dev/follow: "true"``."""
        record = {
            ENV_POINTER: {
                "from": "reg.example/org/llama:production",
                "digest": pinned,
                "resolvedAt": "2026-01-02T03:04:05Z",
            }
        }
        annotations = {"kitpin.dev/pinned": json.dumps(record)}
        if follows:
            annotations["kitpin.dev/follow"] = "true"
        obj = {
            "apiVersion": workload.api_version,
            "kind": workload.kind,
            "metadata": {
                "name": workload.name,
                "namespace": workload.namespace,
                "uid": f"uid-{workload.name}",
                "resourceVersion": "1",
                "annotations": annotations,
            },
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "m",
                                "env": [
                                    {
                                        "name": "MODELKIT_REF",
                                        "value": f"reg.example/org/llama:production@{pinned}",
                                    }
                                ],
                            }
                        ]
                    }
                }
            },
        }
        self.objects[workload.key] = obj
        return obj

    async def get(self, workload: model.Workload) -> Mapping[str, Any] | None:
        self.reads.append(workload.key)
        return self.objects.get(workload.key)

    async def replace(self, workload: model.Workload, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error
        stored = json.loads(json.dumps(obj))
        meta = stored["metadata"]
        meta["resourceVersion"] = str(int(meta.get("resourceVersion", "0")) + 1)
        self.objects[workload.key] = stored
        self.replaced.append(stored)
        return stored


@dataclass
class FakeEvents:
    emitted: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(object name, type, reason, message)."""

    async def emit(
        self, obj: Mapping[str, Any], *, event_type: str, reason: str, message: str
    ) -> None:
        self.emitted.append((obj["metadata"]["name"], event_type, reason, message))

    def reasons(self) -> list[tuple[str, str, str]]:
        return [(name, t, r) for name, t, r, _ in self.emitted]


@dataclass
class FakeBook:
    """Records that take every observation at once through the pure transitions."""

    clock: FakeClock
    statuses: dict[model.TagKey, model.TagStatus] = field(default_factory=dict)
    observed: list[tuple[model.TagKey, model.Observation]] = field(default_factory=list)

    def seed(self, key: model.TagKey, *observations: model.Observation) -> model.TagStatus:
        status = model.apply_all(self.statuses.get(key), observations, now=self.clock.now())
        assert status is not None
        self.statuses[key] = status
        return status

    def records(self) -> list[model.TagRecord]:
        return [
            model.TagRecord(key=k, name=k.name, resource_version="1", status=s, status_written=True)
            for k, s in self.statuses.items()
        ]

    def observe(self, key: model.TagKey, obs: model.Observation) -> bool:
        self.observed.append((key, obs))
        status = model.apply(self.statuses.get(key), obs, now=self.clock.now())
        if status is not None:
            self.statuses[key] = status
        return True

    def kinds(self, key: model.TagKey) -> Sequence[str]:
        return [type(o).__name__ for k, o in self.observed if k == key]
