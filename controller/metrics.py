"""Prometheus metrics for kitpin, and the registry they live in.

Each :class:`Metrics` owns its own ``CollectorRegistry`` instead of using the process-global
default one, so tests and several controllers in one process never collide; the webhook
server exposes ``metrics.registry`` (``render()``) on ``/metrics``.

Label values are always drawn from small, fixed sets so cardinality stays bounded:

- ``reason``: the constant ``reason`` of an :mod:`controller.errors` class;
- ``registry``: a registry ``host[:port]`` the host policy allowed (a handful per cluster);
- ``kind`` of a registry request: ``manifest`` | ``head`` (a manifest ``HEAD``, the digest
  only: the drift watch's) | ``token`` | ``blob`` | ``ping`` (the ``GET /v2/`` API version
  check, at most once per registry endpoint while it answers);
- ``webhook`` / ``outcome``: names fixed by the webhook layer;
- ``generation``: ``0`` | ``1`` | ``2`` (the cyclic garbage collector's);
- the ModelKitTag records and the drift watch (``controller.tags``): ``kind`` of a record
  write (:data:`TAG_WRITE_KINDS`), ``outcome`` of a drift check (:data:`DRIFT_OUTCOMES`),
  ``seen_by`` of a move (:data:`MOVE_SEEN_BY`). A value outside its set is counted as
  ``other``, so a caller's typo never adds a series.

References, repositories, tags, digests and credential identities are never label values.

Resolver counters add up: every ``kitpin_resolver_requests_total`` is exactly one of a cache
hit, a cache miss (this call started a registry fetch) or a coalesced call (joined a fetch
already in flight). Stale answers and errors are counted on top of that, per caller.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller import errors

__all__ = [
    "CONTENT_TYPE",
    "DRIFT_OUTCOMES",
    "MOVE_SEEN_BY",
    "TAG_WRITE_KINDS",
    "Metrics",
    "RegistryRequestKind",
]

RegistryRequestKind = Literal["manifest", "head", "token", "blob", "ping"]

TAG_WRITE_KINDS: Final = ("create", "status", "conflict", "failed")
"""``kitpin_tag_writes_total{kind}``: a record created, a status patched, a 409 re-read, a
write given up (``controller.tags.settings.WriteKind``)."""

DRIFT_OUTCOMES: Final = ("unchanged", "moved", "tag-missing", "digest-missing", "error")
"""``kitpin_drift_checks_total{outcome}`` (``controller.tags.settings.WatchOutcome``)."""

MOVE_SEEN_BY: Final = ("admission", "watch")
"""``kitpin_tag_moves_total{seen_by}``: who saw a tag move."""

ROLL_OUTCOMES: Final = ("rolled", "denied", "failed")
"""``kitpin_roll_forwards_total{outcome}`` (``controller.tags.settings.RollOutcome``)."""

_OTHER: Final = "other"

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`Metrics.render`'s output."""

# Resolutions must finish within the resolver deadline (8 s by default, below the 10 s webhook
# timeout), so the buckets stop at 10 s; the low end shows cache-speed and LAN-registry speed.
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    8.0,
    10.0,
)

_REGISTRY_ERROR_REASONS: Final = tuple(
    cls.reason
    for cls in (
        errors.RegistryError,
        errors.NotFoundError,
        errors.UnauthorizedError,
        errors.ForbiddenError,
        errors.RateLimitedError,
        errors.RegistryTimeoutError,
        errors.UnreachableError,
        errors.BadResponseError,
        errors.ManifestTooLargeError,
        errors.DigestMismatchError,
        errors.HostNotAllowedError,
    )
)

# A collection of a young generation takes microseconds; a full one over a large cache, tens of
# milliseconds: the admission latency it adds to every review in flight.
_GC_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    """All of kitpin's counters and histograms, in a registry of their own, with the
    process's (``process_*``: CPU seconds, resident memory, open file descriptors, start
    time) and the platform's (``python_info``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        # -- resolver -------------------------------------------------------------------------
        self.resolver_requests = Counter(
            "kitpin_resolver_requests",
            "Resolutions asked of the resolver (each is a hit, a miss or coalesced).",
            registry=r,
        )
        self.resolver_cache_hits = Counter(
            "kitpin_resolver_cache_hits",
            "Resolutions answered from a fresh cache entry (positive or negative).",
            registry=r,
        )
        self.resolver_cache_misses = Counter(
            "kitpin_resolver_cache_misses",
            "Resolutions that started a registry fetch.",
            registry=r,
        )
        self.resolver_coalesced = Counter(
            "kitpin_resolver_coalesced",
            "Resolutions that joined a registry fetch already in flight for the same key.",
            registry=r,
        )
        self.resolver_refreshes = Counter(
            "kitpin_resolver_refreshes",
            "Background refreshes of cache entries in use, started ahead of their expiry "
            "(refresh-ahead); not resolver requests.",
            registry=r,
        )
        self.resolver_stale_served = Counter(
            "kitpin_resolver_stale_served",
            "Resolutions answered with an expired, previously verified digest because the "
            "registry failed (stale-if-error).",
            registry=r,
        )
        self.resolver_errors = Counter(
            "kitpin_resolver_errors",
            "Resolutions that ended in an error, by error reason.",
            ["reason"],
            registry=r,
        )
        self.resolver_fetch_seconds = Histogram(
            "kitpin_resolver_fetch_seconds",
            "Duration of registry fetches made by the resolver (success or failure).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for reason in _REGISTRY_ERROR_REASONS:
            self.resolver_errors.labels(reason=reason)

        # -- registry client ------------------------------------------------------------------
        self.registry_requests = Counter(
            "kitpin_registry_requests",
            "HTTP requests sent to registries, by registry host and kind.",
            ["registry", "kind"],
            registry=r,
        )

        # -- webhook (filled in by the admission layer) ---------------------------------------
        self.admission_reviews = Counter(
            "kitpin_admission_reviews",
            "AdmissionReviews answered, by webhook and outcome.",
            ["webhook", "outcome"],
            registry=r,
        )
        self.policy_violations = Counter(
            "kitpin_policy_violations",
            "ModelKit policy violations found at admission, by policy, rule and mode.",
            ["policy", "rule", "mode"],
            registry=r,
        )
        self.admission_duration_seconds = Histogram(
            "kitpin_admission_duration_seconds",
            "Time to answer an AdmissionReview, by webhook.",
            ["webhook"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # -- ModelKitTag records and the drift watch (controller.tags) ------------------------
        self.tag_writes = Counter(
            "kitpin_tag_writes",
            "Writes of ModelKitTag records, by kind: create, status (a status patch), conflict "
            "(a 409 answered, the record read again), failed (a write given up).",
            ["kind"],
            registry=r,
        )
        self.tag_queue_drops = Counter(
            "kitpin_tag_queue_drops",
            "Observations of a tag dropped because the record writer's queue was full (the "
            "review was answered; its record is not updated).",
            registry=r,
        )
        self.drift_checks = Counter(
            "kitpin_drift_checks",
            "Checks of a tag or a pinned digest by the drift watch, by registry host and outcome.",
            ["registry", "outcome"],
            registry=r,
        )
        self.tag_moves = Counter(
            "kitpin_tag_moves",
            "Moves of a tag to another digest, by who saw them: admission or watch.",
            ["seen_by"],
            registry=r,
        )
        self.drift_budget_wait_seconds = Counter(
            "kitpin_drift_budget_wait_seconds",
            "Seconds the drift watch waited for a registry's request budget "
            "(drift.budgetPerMinute), by registry host.",
            ["registry"],
            registry=r,
        )
        for kind in TAG_WRITE_KINDS:
            self.tag_writes.labels(kind=kind)
        for seen_by in MOVE_SEEN_BY:
            self.tag_moves.labels(seen_by=seen_by)

        # -- process --------------------------------------------------------------------------
        self.gc_pause_seconds = Histogram(
            "kitpin_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (the event loop stops for each), by "
            "generation collected.",
            ["generation"],
            buckets=_GC_BUCKETS,
            registry=r,
        )
        for generation in range(3):
            self.gc_pause_seconds.labels(generation=str(generation))
        self._gc_hook: Callable[[str, dict[str, Any]], None] | None = None

    def watch_gc(self) -> None:
        """Time every garbage collection into ``kitpin_gc_pause_seconds`` (a ``gc.callbacks``
        hook: two clock reads per collection). Idempotent; :meth:`unwatch_gc` removes it."""
        if self._gc_hook is not None:
            return
        children = [self.gc_pause_seconds.labels(generation=str(g)) for g in range(3)]
        started = [0.0]
        clock = time.perf_counter

        def hook(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = clock()
            else:
                children[min(int(info.get("generation", 2)), 2)].observe(clock() - started[0])

        self._gc_hook = hook
        gc.callbacks.append(hook)

    def unwatch_gc(self) -> None:
        if self._gc_hook is not None:
            gc.callbacks.remove(self._gc_hook)
            self._gc_hook = None

    def count_policy_violation(self, policy: str, rule: str, mode: str) -> None:
        """Count one violation. ``policy`` is ``Kind/name`` of a policy object: bounded by
        the number of policies a platform team writes, like ``rule`` and ``mode``."""
        self.policy_violations.labels(policy=policy, rule=rule, mode=mode).inc()

    def count_registry_request(self, registry: str, kind: RegistryRequestKind) -> None:
        """Count one HTTP request to ``registry`` (a policy-allowed ``host[:port]``)."""
        self.registry_requests.labels(registry=registry, kind=kind).inc()

    def observe_admission(self, webhook: str, outcome: str, seconds: float) -> None:
        """Count one answered review. ``webhook`` is ``mutate`` or ``validate``; ``outcome`` a
        named reason (``Pinned``, ``NotFound``, ...): both bounded sets."""
        self.admission_reviews.labels(webhook=webhook, outcome=outcome).inc()
        self.admission_duration_seconds.labels(webhook=webhook).observe(seconds)

    def count_resolver_error(self, reason: str) -> None:
        """Count one resolution that ended in an error with this ``reason``."""
        self.resolver_errors.labels(reason=reason).inc()

    # -- ModelKitTag records and the drift watch: controller.tags.settings.TagMetrics -------

    def count_tag_write(self, kind: str) -> None:
        """Count one write of a record: ``create`` | ``status`` | ``conflict`` | ``failed``."""
        self.tag_writes.labels(kind=_bounded(kind, TAG_WRITE_KINDS)).inc()

    def count_tag_drop(self) -> None:
        """Count one observation dropped: the writer's queue was full."""
        self.tag_queue_drops.inc()

    def count_drift_check(self, registry: str, outcome: str) -> None:
        """Count one drift check against ``registry`` (a policy-allowed ``host[:port]``) with
        ``outcome`` (:data:`DRIFT_OUTCOMES`)."""
        self.drift_checks.labels(registry=registry, outcome=_bounded(outcome, DRIFT_OUTCOMES)).inc()

    def count_tag_move(self, seen_by: str) -> None:
        """Count one move of a tag, seen by ``admission`` or ``watch``."""
        self.tag_moves.labels(seen_by=_bounded(seen_by, MOVE_SEEN_BY)).inc()

    def count_budget_wait(self, registry: str, seconds: float) -> None:
        """Add ``seconds`` the drift watch waited for ``registry``'s budget (a negative or
        non-finite wait counts as none: a counter only grows)."""
        wait = seconds if math.isfinite(seconds) and seconds > 0 else 0.0
        self.drift_budget_wait_seconds.labels(registry=registry).inc(wait)

    # -- ModelKitTag records: gauges and roll-forward (controller.tags, issue 17) -----------
    # Created on first use (``track_tags`` at wiring, or the first roll-forward), in this
    # object's own registry like every metric above.

    def track_tags(self, *, records: Callable[[], float], pending: Callable[[], float]) -> None:
        """``kitpin_tag_records`` (records this replica knows: the watch of modelkittags)
        and ``kitpin_tag_pending`` (tags with observations waiting to be written), read at
        scrape time from ``records`` and ``pending``; ``kitpin_roll_forwards_total``
        created with every outcome. Idempotent per metric."""
        if getattr(self, "tag_records", None) is None:
            self.tag_records = Gauge(
                "kitpin_tag_records",
                "ModelKitTag records this replica knows (its watch of modelkittags).",
                registry=self.registry,
            )
            self.tag_pending = Gauge(
                "kitpin_tag_pending",
                "Tags with observations waiting to be written by the record writer.",
                registry=self.registry,
            )
        self.tag_records.set_function(records)
        self.tag_pending.set_function(pending)
        self._roll_forwards()

    def _roll_forwards(self) -> Counter:
        counter: Counter | None = getattr(self, "roll_forwards", None)
        if counter is None:
            counter = self.roll_forwards = Counter(
                "kitpin_roll_forwards",
                "Workloads annotated kitpin.dev/follow re-pinned by the drift watch after "
                "their tag moved, by outcome: rolled, denied (by an admission webhook: a "
                "policy), failed (refused otherwise).",
                ["outcome"],
                registry=self.registry,
            )
            for outcome in ROLL_OUTCOMES:
                counter.labels(outcome=outcome)
        return counter

    def count_roll_forward(self, outcome: str) -> None:
        """Count one roll-forward: ``rolled`` | ``denied`` | ``failed``."""
        self._roll_forwards().labels(outcome=_bounded(outcome, ROLL_OUTCOMES)).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (``Content-Type``:
        :data:`CONTENT_TYPE`), without the ``_created`` series (:class:`_WithoutCreated`)."""
        return generate_latest(_WithoutCreated(self.registry))

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The current value of one sample, 0.0 when it does not exist yet. ``name`` is the
        full sample name, e.g. ``kitpin_resolver_cache_hits_total``. Meant for tests."""
        sample = self.registry.get_sample_value(name, dict(labels) if labels else None)
        return 0.0 if sample is None else sample


class _WithoutCreated(Collector):
    """``registry``'s metrics without their ``_created`` samples.

    prometheus_client adds a ``<name>_created`` gauge (the Unix time the series was created)
    beside every counter and histogram series; the text format has no use for it and it
    doubled the series kitpin exposes. The library's own switch (``disable_created_metrics()``,
    ``PROMETHEUS_DISABLE_CREATED_SERIES``) is global to the process; this drops them from
    kitpin's registry only, at render time, whatever the order of imports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            created = f"{metric.name}_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else ``other``: label values stay a fixed set."""
    return value if value in allowed else _OTHER
