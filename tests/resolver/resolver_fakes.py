"""Fakes for the resolver tests: a ManifestSource, a hand-driven clock, references, errors."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from controller import errors, refs
from controller.resolver import Resolver
from controller.types import Credential, Manifest

MakeResolver = Callable[..., Resolver]
"""The ``make_resolver`` fixture: ``make_resolver(**settings) -> Resolver``."""

KIT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def make_ref(
    repository: str = "org/model",
    tag: str = "v1",
    *,
    registry: str = "registry.example.com",
    digest: str | None = None,
    name: str | None = None,
) -> refs.Reference:
    """A Reference built by hand (``refs.parse`` is another module's job)."""
    return refs.Reference(
        registry=registry,
        repository=repository,
        tag=tag,
        tag_explicit=True,
        digest=digest,
        grammar="kit",
        name=name if name is not None else f"{registry}/{repository}",
    )


def fake_digest(text: str) -> str:
    """A digest of the real shape: ``sha256:`` + 64 hex."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Call:
    canonical: str
    identity: str | None


@dataclass
class FakeSource:
    """A ManifestSource whose tag digests are sha256(canonical + version).

    ``retag(ref)`` bumps the version (the tag now points elsewhere); ``fail`` makes every call
    raise; ``gate``, when set, makes calls wait for it; ``started`` / ``finished`` /
    ``cancelled`` are events the tests await instead of sleeping; ``allowed`` restricts which
    credential identities may read (others get Unauthorized, anonymous included).
    """

    versions: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    fail: BaseException | None = None
    gate: asyncio.Event | None = None
    allowed: set[str] | None = None
    wrong_digest: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def retag(self, ref: refs.Reference) -> None:
        self.versions[ref.canonical] = self.versions.get(ref.canonical, 0) + 1

    def digest_of(self, ref: refs.Reference) -> str:
        if ref.digest is not None:
            return ref.digest
        return fake_digest(ref.canonical + str(self.versions.get(ref.canonical, 0)))

    async def get_manifest(
        self, ref: refs.Reference, *, credential: Credential | None = None
    ) -> Manifest:
        self.calls.append(Call(ref.canonical, credential.identity if credential else None))
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        try:
            if self.fail is not None:
                raise self.fail
            if self.allowed is not None and (
                credential is None or credential.identity not in self.allowed
            ):
                raise errors.UnauthorizedError(
                    f"{ref.registry} refused {ref.canonical}: credentials missing or rejected",
                    registry=ref.registry,
                    repository=ref.repository,
                )
            digest = fake_digest("something else") if self.wrong_digest else self.digest_of(ref)
            return Manifest(
                digest=digest, media_type=KIT_MANIFEST, size=512, format="kitops-modelkit"
            )
        finally:
            self.finished.set()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def not_found(ref: refs.Reference) -> errors.NotFoundError:
    return errors.NotFoundError(
        f"{ref.canonical} does not exist", registry=ref.registry, repository=ref.repository
    )


def unreachable(ref: refs.Reference) -> errors.UnreachableError:
    return errors.UnreachableError(
        f"cannot connect to {ref.registry}", registry=ref.registry, repository=ref.repository
    )


CRED_A = Credential(username="alice", password="a-secret", source="secret team-a/pull")
CRED_B = Credential(username="bob", password="b-secret", source="secret team-b/pull")


async def wait(event: asyncio.Event, *, guard: float = 5.0) -> None:
    """Await ``event``; ``guard`` only stops a broken test from hanging forever."""
    async with asyncio.timeout(guard):
        await event.wait()
