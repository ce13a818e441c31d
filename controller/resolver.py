"""Resolve references to verified digests: TTL cache, single-flight, stale-if-error, deadlines.

The resolver sits between the admission path and the registry client and makes a rollout of
1,000 pods cost the registry one request, not 1,000, without ever answering slower than its
deadline or with a digest the caller is not entitled to.

Cache
    Keyed by ``(reference.canonical, credential identity or "anonymous")``. Two spellings of
    one reference (``nginx`` and ``docker.io/library/nginx:latest``) share an entry; two
    credentials never do (see :class:`Resolver`). A positive entry lives ``ttl`` seconds (a
    tag may be re-pointed at any time) or ``digest_ttl`` seconds for a reference that already
    carries a digest (its content cannot change, only its existence and who may read it).
    A ``NotFound`` answer is cached for ``negative_ttl`` seconds; no other error is cached,
    because the others depend on credentials, on the time (rate limits) or on the network.
    The cache is an LRU bounded by ``max_entries``. A hit is one dict lookup and no lock.

Single-flight
    The first caller for a key that has no fresh entry starts one ``asyncio.Task`` that calls
    the registry and writes the cache; later callers for the same key join that task. Each
    caller waits through ``asyncio.shield`` under its own deadline, so a caller that is
    cancelled or times out (its admission request gave up) leaves the fetch running for the
    others, and the cache is still written when every caller has gone. When the fetch ends,
    successfully or not, its in-flight slot is freed, so the next call after a failure retries.
    The fetch itself is bounded by ``settings.deadline``, so a hung registry cannot pin a slot.

Refresh-ahead
    A hit on a positive entry older than ``refresh_ahead`` of its TTL (default 0.8: after
    48 s of a 60 s TTL) is answered from the cache at once and also starts the entry's
    refresh in the background, through the same single-flight slot a miss would use. So a
    reference in steady use is refreshed before it expires and no review waits for the
    registry (a rollout in progress when the TTL ran out used to stall every review for one
    registry round trip). The answer served is still within its TTL: a re-tag is seen exactly
    as soon as before. Entries nobody asks for simply expire; nothing refreshes on a timer.

Stale-if-error
    An expired positive entry is kept for ``stale_if_error`` more seconds. If the refresh fails
    with an error that says nothing about the answer itself (unreachable, timeout, 5xx, rate
    limited: see :func:`may_serve_stale`) the last verified digest is returned flagged
    ``stale=True``. Errors that *are* an answer (not found, unauthorized, forbidden, digest
    mismatch, bad response, host not allowed) are never papered over: the entry is dropped
    (or replaced by a negative one) and the error goes to every waiting caller.

Errors
    Only :class:`controller.errors.RegistryError` subclasses leave :meth:`Resolver.resolve`;
    anything else raised by the source is logged with its traceback and wrapped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from controller import errors, refs
from controller.flights import Flights
from controller.metrics import Metrics
from controller.types import Credential, Manifest, Resolution, ResolutionSource, identity_of

__all__ = [
    "ConfigCache",
    "ConfigSource",
    "ManifestSource",
    "Resolver",
    "ResolverSettings",
    "may_serve_stale",
]

log = logging.getLogger(__name__)

_Key = tuple[str, str]


class ManifestSource(Protocol):
    """Where manifests come from: ``registry.RegistryClient`` in production, a fake in tests.
    Must raise only ``errors.RegistryError`` subclasses (anything else is treated as a bug)."""

    async def get_manifest(
        self, ref: refs.Reference, *, credential: Credential | None = None
    ) -> Manifest: ...


@dataclass(frozen=True, kw_only=True)
class ResolverSettings:
    """How the resolver caches and how long it waits. Every field has a safe default."""

    ttl: float = 60.0
    """Seconds a tag's digest is reused without asking the registry. Default 60 s: a re-tag
    reaches new pods within a minute, while a rollout of many pods costs one request
    (peers use 10 s to 60 min; Kubewarden and Connaisseur settle near 30 to 60 s)."""

    digest_ttl: float = 600.0
    """Seconds a reference that already carries a digest stays verified. Default 600 s: the
    content behind a digest is immutable, so only two things can change, whether the manifest
    still exists and whether this credential may still read it; ten minutes bounds how long a
    deleted manifest or a revoked pull secret keeps being admitted."""

    negative_ttl: float = 5.0
    """Seconds a ``NotFound`` answer is reused. Default 5 s: absorbs a burst of pods for a
    mistyped reference, short enough that pushing the missing tag is noticed at once. Only
    NotFound is cached: Unauthorized/Forbidden depend on the credential presented,
    RateLimited and timeouts on the moment, so caching them would turn a blip into an outage."""

    stale_if_error: float = 300.0
    """Seconds past expiry during which the last verified digest may still be served when the
    registry cannot answer (unreachable, timeout, 5xx, rate limited). Default 300 s rides out
    a registry restart or a short network partition. Never used for NotFound, Unauthorized,
    Forbidden, DigestMismatch, BadResponse or HostNotAllowed: those are answers (the tag is
    gone, the credential was revoked, the content is wrong, the host is banned) and serving an
    old digest would override them. Set 0 to disable."""

    deadline: float = 8.0
    """Seconds one resolution may take, and the bound on one registry fetch. Default 8 s: it
    must stay below the webhook ``timeoutSeconds`` (10 s default) so kitpin, not the
    apiserver, decides what happens on a slow registry (Ratify #92 failed open otherwise).
    A per-call ``deadline`` longer than this still waits at most this long for the fetch."""

    max_entries: int = 50_000
    """Upper bound on cache entries (positive and negative); the least recently used entry is
    evicted first. Default 50,000 keeps memory to tens of MB even for huge clusters."""

    refresh_ahead: float = 0.8
    """Fraction of a positive entry's TTL after which a hit also refreshes it in the
    background (see the module docstring). 1 turns refresh-ahead off."""

    enabled: bool = True
    """False turns the cache AND single-flight off: every call asks the registry itself
    (benchmarks of the uncached path, debugging). Deadlines and error wrapping still apply.
    Coalescing goes too because, without a cache, joining a fetch is a cache by another name."""

    def __post_init__(self) -> None:
        for name in ("ttl", "digest_ttl", "negative_ttl", "stale_if_error"):
            if getattr(self, name) < 0:
                raise errors.ConfigError(f"resolver {name} must be >= 0 seconds")
        if self.deadline <= 0:
            raise errors.ConfigError(
                "resolver deadline must be > 0 seconds (and below the webhook timeoutSeconds)"
            )
        if self.max_entries < 1:
            raise errors.ConfigError("resolver max_entries must be >= 1")
        if not 0 < self.refresh_ahead <= 1:
            raise errors.ConfigError(
                "resolver refresh_ahead must be a fraction of the TTL in (0, 1]; 1 turns it off"
            )


_STALE_ELIGIBLE: Final = (
    errors.UnreachableError,
    errors.RegistryTimeoutError,
    errors.RateLimitedError,
)


def may_serve_stale(err: errors.RegistryError) -> bool:
    """Whether ``err`` allows serving a stale digest: it says the registry could not answer,
    not what the answer is. That is Unreachable, Timeout, RateLimited, and a plain
    ``RegistryError`` (the client's 5xx; also an unexpected failure wrapped by the resolver,
    whose cause is logged). Every other subclass is an answer and is never overridden."""
    return type(err) is errors.RegistryError or isinstance(err, _STALE_ELIGIBLE)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    hit: Resolution | None
    """Positive entry: the answer to return on a hit (``source="cache"``)."""
    error: errors.NotFoundError | None
    """Negative entry: the NotFound to re-raise on a hit."""
    expires: float
    stale_until: float
    refresh_at: float = float("inf")
    """From this time on a hit also starts a background refresh (positive entries)."""


class _Flight:
    """One in-flight fetch. The slot is registered before its task can run (even with an eager
    task factory), so the task can tell whether it still owns the slot."""

    __slots__ = ("task",)
    task: asyncio.Task[Resolution]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _restamp(res: Resolution, ref: refs.Reference, source: ResolutionSource) -> Resolution:
    return Resolution(
        reference=ref,
        digest=res.digest,
        manifest=res.manifest,
        resolved_at=res.resolved_at,
        source=source,
    )


class Resolver:
    """Resolves references to verified digests; see the module docstring for the design.

    Security (confused deputy): the cache key includes the credential's identity, so a digest
    resolved with one credential (one namespace's pull secret) is never served to a caller
    presenting a different credential or none, and such callers never join each other's
    in-flight fetch. Each of them asks the registry with what it holds and gets the registry's
    own verdict; the cache only saves repeating the same question with the same secret.
    """

    def __init__(
        self,
        source: ManifestSource,
        *,
        settings: ResolverSettings = ResolverSettings(),  # frozen: one shared default is safe
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._source = source
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[_Key, _Entry] = OrderedDict()
        self._inflight: dict[_Key, _Flight] = {}
        self._tasks: set[asyncio.Task[Resolution]] = set()
        # Bound once: the hit path touches these on every call.
        self._requests = self.metrics.resolver_requests
        self._hits = self.metrics.resolver_cache_hits
        self._misses = self.metrics.resolver_cache_misses

    # -- public -------------------------------------------------------------------------------

    async def resolve(
        self,
        ref: refs.Reference,
        *,
        credential: Credential | None = None,
        deadline: float | None = None,
    ) -> Resolution:
        """The digest ``ref`` points at, as seen with ``credential``, within ``deadline``
        seconds (default ``settings.deadline``). A reference that carries a digest is still
        fetched (by digest) to check it exists, is readable with ``credential`` and is what it
        claims. Raises only :class:`errors.RegistryError` subclasses; a missed deadline is
        :class:`errors.RegistryTimeoutError` (unless a stale answer may be served)."""
        self._requests.inc()
        if not self.settings.enabled:
            return await self._resolve_uncached(ref, credential, deadline)
        key = (ref.canonical, identity_of(credential))
        entry = self._cache.get(key)
        now = self._clock()
        if entry is not None and now < entry.expires:
            self._cache.move_to_end(key)
            self._hits.inc()
            if now >= entry.refresh_at:
                self._refresh_ahead(key, ref, credential)
            hit = entry.hit
            if hit is None:
                assert entry.error is not None
                self.metrics.count_resolver_error(entry.error.reason)
                raise errors.NotFoundError(
                    entry.error.message,
                    registry=entry.error.registry,
                    repository=entry.error.repository,
                )
            if hit.reference is ref or hit.reference == ref:
                return hit
            return _restamp(hit, ref, "cache")
        return await self._resolve_miss(key, ref, credential, deadline)

    def peek(
        self, ref: refs.Reference, *, credential: Credential | None = None
    ) -> Resolution | None:
        """The fresh cached answer for ``ref`` (counted as a request and a cache hit, as
        :meth:`resolve` would), or None, counting nothing: then call :meth:`resolve`.
        Synchronous, so a review whose references are all cached needs no task and no
        event-loop turn. Negative entries are left to :meth:`resolve` (it raises)."""
        if not self.settings.enabled:
            return None
        key = (ref.canonical, identity_of(credential))
        entry = self._cache.get(key)
        now = self._clock()
        if entry is None or entry.hit is None or now >= entry.expires:
            return None
        self._cache.move_to_end(key)
        self._requests.inc()
        self._hits.inc()
        if now >= entry.refresh_at:
            self._refresh_ahead(key, ref, credential)
        hit = entry.hit
        if hit.reference is ref or hit.reference == ref:
            return hit
        return _restamp(hit, ref, "cache")

    def invalidate(self, ref: refs.Reference | None = None) -> int:
        """Forget cached answers for ``ref`` (every credential), or everything when None.
        Fetches in flight finish for their callers but no longer write the cache.
        Returns the number of cache entries removed."""
        if ref is None:
            removed = len(self._cache)
            self._cache.clear()
            self._inflight.clear()
            return removed
        canonical = ref.canonical
        keys = [key for key in self._cache if key[0] == canonical]
        for key in keys:
            del self._cache[key]
        for key in [key for key in self._inflight if key[0] == canonical]:
            del self._inflight[key]
        return len(keys)

    def cache_size(self) -> int:
        """Number of cache entries, positive and negative, fresh or kept for stale-if-error."""
        return len(self._cache)

    async def aclose(self) -> None:
        """Cancel every fetch in flight (shutdown). Callers still waiting get a RegistryError."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()

    # -- miss path ----------------------------------------------------------------------------

    async def _resolve_miss(
        self,
        key: _Key,
        ref: refs.Reference,
        credential: Credential | None,
        deadline: float | None,
    ) -> Resolution:
        flight = self._inflight.get(key)
        joined = flight is not None
        if flight is None:
            self._misses.inc()
            flight = self._start_fetch(key, ref, credential)
        else:
            self.metrics.resolver_coalesced.inc()
        task = flight.task
        limit = self.settings.deadline if deadline is None else deadline
        try:
            async with asyncio.timeout(limit):
                res = await asyncio.shield(task)
        except TimeoutError as e:
            # Only our own deadline lands here: the fetch task wraps everything it raises.
            timeout = self._deadline_error(ref, limit)
            stale = self._serve_stale(key, ref, timeout)
            if stale is not None:
                return stale
            self.metrics.count_resolver_error(timeout.reason)
            raise timeout from e
        except errors.RegistryError as err:
            stale = self._serve_stale(key, ref, err)
            if stale is not None:
                return stale
            self.metrics.count_resolver_error(err.reason)
            raise
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or current.cancelling() == 0):
                # The fetch was cancelled (aclose), not this caller.
                closed = errors.RegistryError(
                    f"resolving {ref.canonical} was abandoned because the resolver is "
                    "shutting down; retry against another replica",
                    registry=ref.registry,
                    repository=ref.repository,
                )
                self.metrics.count_resolver_error(closed.reason)
                raise closed from None
            raise
        if joined:
            return _restamp(res, ref, "coalesced")
        return res

    def _refresh_ahead(self, key: _Key, ref: refs.Reference, credential: Credential | None) -> None:
        """Start ``key``'s refresh in the background unless one is in flight. Its outcome
        is written like a miss's (a NotFound or a revoked credential replaces the entry;
        an unreachable registry keeps it until it expires); nobody waits for it."""
        if key in self._inflight:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller outside the event loop (tests, tools)
            return
        self.metrics.resolver_refreshes.inc()
        self._start_fetch(key, ref, credential)

    def _start_fetch(
        self, key: _Key, ref: refs.Reference, credential: Credential | None
    ) -> _Flight:
        flight = _Flight()
        self._inflight[key] = flight
        task = asyncio.create_task(
            self._fetch(key, flight, ref, credential), name=f"kitpin-resolve {key[0]}"
        )
        flight.task = task
        self._tasks.add(task)
        task.add_done_callback(self._fetch_done)
        return flight

    def _fetch_done(self, task: asyncio.Task[Resolution]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            # Mark the exception retrieved: the callers got it (or all of them left already).
            task.exception()

    async def _fetch(
        self,
        key: _Key,
        flight: _Flight,
        ref: refs.Reference,
        credential: Credential | None,
    ) -> Resolution:
        """The shared fetch: ask the source, write the cache, free the in-flight slot."""
        try:
            manifest = await self._call_source(ref, credential, self.settings.deadline)
        except errors.RegistryError as err:
            if self._inflight.get(key) is flight:
                self._record_failure(key, err)
            level = logging.WARNING if may_serve_stale(err) else logging.INFO
            log.log(level, "resolving %s failed: %s (%s)", ref.canonical, err, err.reason)
            raise
        else:
            res = Resolution(
                reference=ref,
                digest=manifest.digest,
                manifest=manifest,
                resolved_at=self._wall_clock(),
                source="registry",
            )
            if self._inflight.get(key) is flight:
                self._record_success(key, res)
            return res
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]

    async def _call_source(
        self, ref: refs.Reference, credential: Credential | None, limit: float
    ) -> Manifest:
        """One source call under ``limit`` seconds; only RegistryError subclasses escape."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit) as scope:
                manifest = await self._source.get_manifest(ref, credential=credential)
        except errors.RegistryError:
            raise
        except TimeoutError as e:
            if scope.expired():
                raise self._deadline_error(ref, limit) from e
            raise self._unexpected(ref, e) from e
        except Exception as e:  # CancelledError is a BaseException and passes through
            raise self._unexpected(ref, e) from e
        finally:
            self.metrics.resolver_fetch_seconds.observe(time.perf_counter() - started)
        if ref.digest is not None and manifest.digest != ref.digest:
            raise errors.DigestMismatchError(
                f"{ref.registry} answered the request for {ref.canonical} with a manifest "
                f"whose bytes hash to {manifest.digest}; the registry or a proxy in between is "
                "serving the wrong content: do not use it, and check the registry",
                registry=ref.registry,
                repository=ref.repository,
            )
        return manifest

    async def _resolve_uncached(
        self, ref: refs.Reference, credential: Credential | None, deadline: float | None
    ) -> Resolution:
        self._misses.inc()
        limit = self.settings.deadline if deadline is None else deadline
        try:
            manifest = await self._call_source(ref, credential, limit)
        except errors.RegistryError as err:
            self.metrics.count_resolver_error(err.reason)
            raise
        return Resolution(
            reference=ref,
            digest=manifest.digest,
            manifest=manifest,
            resolved_at=self._wall_clock(),
            source="registry",
        )

    # -- cache writes -------------------------------------------------------------------------

    def _put(self, key: _Key, entry: _Entry) -> None:
        cache = self._cache
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self.settings.max_entries:
            cache.popitem(last=False)

    def _record_success(self, key: _Key, res: Resolution) -> None:
        now = self._clock()
        ttl = self.settings.digest_ttl if res.reference.digest is not None else self.settings.ttl
        expires = now + ttl
        hit = _restamp(res, res.reference, "cache")
        self._put(
            key,
            _Entry(
                hit=hit,
                error=None,
                expires=expires,
                stale_until=expires + self.settings.stale_if_error,
                refresh_at=self._refresh_at(now, ttl),
            ),
        )
        if res.reference.digest is None:
            # Seed the digest-keyed entry too: the reference just pinned to this digest is
            # what the validating webhook (and every child Pod) asks for next. The content
            # was verified against that digest moments ago, with the same credential.
            pinned = res.reference.with_digest(res.digest)
            digest_expires = now + self.settings.digest_ttl
            self._put(
                (pinned.canonical, key[1]),
                _Entry(
                    hit=_restamp(res, pinned, "cache"),
                    error=None,
                    expires=digest_expires,
                    stale_until=digest_expires + self.settings.stale_if_error,
                    refresh_at=self._refresh_at(now, self.settings.digest_ttl),
                ),
            )

    def _refresh_at(self, now: float, ttl: float) -> float:
        if self.settings.refresh_ahead >= 1:
            return float("inf")
        return now + ttl * self.settings.refresh_ahead

    def _record_failure(self, key: _Key, err: errors.RegistryError) -> None:
        if isinstance(err, errors.NotFoundError):
            if self.settings.negative_ttl > 0:
                expires = self._clock() + self.settings.negative_ttl
                self._put(key, _Entry(hit=None, error=err, expires=expires, stale_until=expires))
            else:
                self._cache.pop(key, None)
        elif not may_serve_stale(err):
            # An answer that overrides what we knew (revoked, forbidden, wrong content):
            # the last verified digest must not be served stale later.
            self._cache.pop(key, None)
        # Otherwise keep the last verified entry: it may be served stale.

    def _serve_stale(
        self, key: _Key, ref: refs.Reference, err: errors.RegistryError
    ) -> Resolution | None:
        if not may_serve_stale(err):
            return None
        entry = self._cache.get(key)
        if entry is None or entry.hit is None:
            return None
        if self._clock() >= entry.stale_until:
            del self._cache[key]  # too old to serve ever again
            return None
        self.metrics.resolver_stale_served.inc()
        log.debug("serving stale digest for %s because: %s", ref.canonical, err)
        hit = entry.hit
        return Resolution(
            reference=ref,
            digest=hit.digest,
            manifest=hit.manifest,
            resolved_at=hit.resolved_at,
            stale=True,
            source="stale",
            stale_reason=str(err),
        )

    # -- errors -------------------------------------------------------------------------------

    @staticmethod
    def _deadline_error(ref: refs.Reference, limit: float) -> errors.RegistryTimeoutError:
        return errors.RegistryTimeoutError(
            f"no answer from {ref.registry} for {ref.canonical} within the {limit:g} s "
            "resolution deadline; check that the registry is up and reachable from the "
            "controller (or raise the resolver deadline, keeping it below the webhook "
            "timeoutSeconds)",
            registry=ref.registry,
            repository=ref.repository,
        )

    @staticmethod
    def _unexpected(ref: refs.Reference, e: BaseException) -> errors.RegistryError:
        log.error("unexpected failure resolving %s", ref.canonical, exc_info=e)
        return errors.RegistryError(
            f"unexpected failure resolving {ref.canonical}: {type(e).__name__}: {e}; this is "
            "probably a kitpin bug, the controller log has the traceback",
            registry=ref.registry,
            repository=ref.repository,
        )


class ConfigSource(Protocol):
    """Fetches a manifest's config blob (the Kitfile of a KitOps ModelKit):
    ``registry.RegistryClient``, or a :class:`ConfigCache` in front of it (the admission
    engine's ``configs``)."""

    async def get_config(
        self,
        ref: refs.Reference,
        manifest: Manifest,
        *,
        credential: Credential | None = None,
    ) -> Mapping[str, Any]: ...


class ConfigCache:
    """Config blobs (Kitfiles) by digest, for policy rules that read them.

    The content at a digest never changes, so entries need no TTL, only an LRU bound; the key
    includes the credential's identity for the same reason the resolver's does (reading a
    private blob once must not let another caller skip proving access). Concurrent misses for
    one key share one fetch, a task of its own: the first caller's deadline does not end it
    for the others.
    """

    def __init__(self, source: ConfigSource, *, max_entries: int = 2_000) -> None:
        self._source = source
        self._max = max_entries
        self._cache: OrderedDict[tuple[str, str], Mapping[str, Any]] = OrderedDict()
        self._fetches: Flights[tuple[str, str], Mapping[str, Any]] = Flights()

    def __len__(self) -> int:
        return len(self._cache)

    async def get_config(
        self,
        ref: refs.Reference,
        manifest: Manifest,
        *,
        credential: Credential | None = None,
    ) -> Mapping[str, Any]:
        key = (
            manifest.config_digest or manifest.digest,
            identity_of(credential),
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit

        async def fetch() -> Mapping[str, Any]:
            config = await self._source.get_config(ref, manifest, credential=credential)
            self._cache[key] = config
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
            return config

        # One fetch per key, a task of its own: a caller's deadline leaves it to the others.
        return await self._fetches.result(key, fetch, name=f"kitpin-config {key[0]}")
