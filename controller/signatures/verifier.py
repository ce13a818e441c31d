"""The signature check a pin waits for: :class:`Verifier`, cached and single-flight.

``await verifier.verify(ref, digest, keys, credential=...)`` finds the signatures of
``digest`` in ``ref``'s repository (:mod:`.finding`, through the registry client) and
judges them (:mod:`.judging`). The outcome is cached per (repository, digest, key set,
credential identity): a verified or invalid digest stays so for :attr:`ttl` seconds, a
missing signature is asked again after :attr:`missing_ttl` (a signature is often pushed
just after the artifact), an unavailable one is not cached. Concurrent checks of the same
key join one lookup (:class:`controller.flights.Flights`); a caller that gives up (its
review's deadline) leaves the lookup to the others.

The repository is part of the key because signatures live beside the artifact (the same
digest in another repository has its own); the credential's identity because what a
registry shows depends on who asks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from controller import flights, refs, types
from controller.signatures import finding, judging
from controller.signatures.keys import KeySet
from controller.signatures.model import (
    Outcome,
    SignatureInvalid,
    SignatureMissing,
    SignatureUnavailable,
    Verified,
)

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MISSING_TTL",
    "DEFAULT_TTL",
    "CacheKey",
    "Verifier",
]

DEFAULT_TTL: Final = 300.0
DEFAULT_MISSING_TTL: Final = 30.0
DEFAULT_MAX_ENTRIES: Final = 4096

CacheKey = tuple[str, str, str, str]
"""(``registry/repository``, digest, key set fingerprint, credential identity)."""


class Verifier:
    """Checks that a digest is signed by a listed key; one per process (it caches)."""

    def __init__(
        self,
        registry: finding.SignatureRegistry,
        *,
        ttl: float = DEFAULT_TTL,
        missing_ttl: float = DEFAULT_MISSING_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``registry``: the registry client (:class:`controller.registry.RegistryClient`).
        ``ttl``: seconds a verified or invalid outcome is reused; ``missing_ttl``: a missing
        one; ``max_entries``: outcomes kept (least recently used dropped first)."""
        self._registry = registry
        self.ttl = ttl
        self.missing_ttl = missing_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[CacheKey, tuple[float, Outcome]] = OrderedDict()
        self._flights: flights.Flights[CacheKey, Outcome] = flights.Flights()
        self.lookups = 0
        """Lookups started (each a set of registry requests); for tests and metrics."""

    async def verify(
        self,
        ref: refs.Reference,
        digest: str,
        keys: KeySet,
        *,
        credential: types.Credential | None = None,
    ) -> Outcome:
        """The outcome for ``digest`` in ``ref``'s repository (``ref``'s own tag or digest
        are not used: pass the digest being pinned, ``sha256:<64 hex>``, else
        ``ValueError``). Never raises a registry error: those are
        :class:`SignatureUnavailable`."""
        identity = types.identity_of(credential)
        key: CacheKey = (ref.canonical_name, digest, keys.fingerprint, identity)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None:
            expires, outcome = cached
            if now < expires:
                self._cache.move_to_end(key)
                return outcome
            del self._cache[key]
        return await self._flights.result(
            key,
            lambda: self._lookup(key, ref, digest, keys, credential),
            name=f"kitpin-signatures-{ref.canonical_name}@{digest}",
        )

    def peek(
        self,
        ref: refs.Reference,
        digest: str,
        keys: KeySet,
        *,
        credential: types.Credential | None = None,
    ) -> Outcome | None:
        """:meth:`verify` from the cache alone: the fresh outcome, or None. Synchronous."""
        key: CacheKey = (
            ref.canonical_name,
            digest,
            keys.fingerprint,
            types.identity_of(credential),
        )
        cached = self._cache.get(key)
        if cached is None or self._clock() >= cached[0]:
            return None
        self._cache.move_to_end(key)
        return cached[1]

    def invalidate(self) -> None:
        """Forget every cached outcome (a policy's keys were edited in place, say)."""
        self._cache.clear()

    async def aclose(self) -> None:
        """Cancel the lookups in flight (shutdown)."""
        await self._flights.cancel_all()

    async def _lookup(
        self,
        key: CacheKey,
        ref: refs.Reference,
        digest: str,
        keys: KeySet,
        credential: types.Credential | None,
    ) -> Outcome:
        self.lookups += 1
        found = await finding.find(self._registry, ref, digest, credential=credential)
        outcome = judging.judge(
            found, subject=f"{ref.canonical_name}@{digest}", digest=digest, keys=keys
        )
        ttl = self._ttl_of(outcome)
        if ttl > 0:
            self._cache[key] = (self._clock() + ttl, outcome)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return outcome

    def _ttl_of(self, outcome: Outcome) -> float:
        if isinstance(outcome, Verified | SignatureInvalid):
            return self.ttl
        if isinstance(outcome, SignatureMissing):
            return self.missing_ttl
        assert isinstance(outcome, SignatureUnavailable)
        return 0.0
