"""How the ModelKitTag records, the drift watch and its leader election behave:
:class:`TagsSettings`, and :class:`TagMetrics`, the counters they report through. Pure;
``controller.settings`` reads the settings file into :class:`TagsSettings` (the ``tags:`` and
``drift:`` blocks), validated at construction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

from controller import errors

__all__ = ["Counters", "RollOutcome", "TagMetrics", "TagsSettings", "WatchOutcome", "WriteKind"]


@dataclass(frozen=True, kw_only=True)
class TagsSettings:
    """Every field has a safe default."""

    records: bool = True
    """Keep a ModelKitTag per tag resolved at admission (one create and one status patch per
    new tag, one patch per move or new workload, none per cached review). Default on: a
    cached review pays one memo lookup (records on vs off within 5% CPU and throughput in one
    benchmark run; the engine alone +2 us of ~350 us per review, bench/results/tags/); each
    record known costs the replica ~1-2 KiB (10,000 records: bench/README.md)."""

    flush_interval: float = 1.0
    """Seconds between two flushes of the queued observations. Default 1 s: the records trail
    admissions by about a second, and a rollout's many reviews become one write."""

    queue_size: int = 10_000
    """Tags with observations waiting to be written; beyond it observations are dropped
    (counted) rather than slowing a review. Default 10,000: a burst of new tags, about 2 MB."""

    observations_per_tag: int = 64
    """Observations waiting per tag (distinct workloads, digests); more are dropped."""

    checked_write_every: float = 3600.0
    """Seconds between two writes of ``lastChecked`` when the drift watch finds a tag
    unchanged. Default 1 h: checking 10,000 tags every 5 minutes must not write 33 status
    patches a second; a move or a missing digest is written at once."""

    drift: bool = True
    """Run the drift watch (on the one replica holding the Lease, within ``budget_per_minute``
    per registry). It reads the records, so it does nothing without ``records``; it also
    needs kitpin's namespace (for the Lease), else it is off (logged)."""

    drift_interval: float = 300.0
    """``drift.intervalSeconds``: seconds between two checks of the tags in use. Default 300:
    a moved tag is reported within 5 minutes plus the budget's pacing."""

    budget_per_minute: int = 60
    """``drift.budgetPerMinute``: registry requests per minute per registry, paced evenly
    (one every 60/budget seconds). Default 60: one manifest HEAD a second, far below any
    registry's rate limit; 10,000 tags on one registry then take ~3 hours per pass, least
    recently checked first."""

    lease_name: str = "kitpin-drift-watch"
    """The coordination.k8s.io Lease, in kitpin's own namespace."""

    lease_duration: float = 15.0
    """Seconds a Lease is held without renewal before another replica may take it (client-go's
    default). Takeover after a crash: at most this plus two ``lease_retry``."""

    lease_renew_deadline: float = 10.0
    """Seconds the leader keeps watching without a successful renewal; then it stops, before
    anyone else may acquire (must be below ``lease_duration``)."""

    lease_retry: float = 2.0
    """Seconds between two attempts to acquire or renew."""

    def __post_init__(self) -> None:
        positive = {
            "flush_interval": self.flush_interval,
            "checked_write_every": self.checked_write_every,
            "drift_interval": self.drift_interval,
            "lease_duration": self.lease_duration,
            "lease_renew_deadline": self.lease_renew_deadline,
            "lease_retry": self.lease_retry,
            "queue_size": self.queue_size,
            "observations_per_tag": self.observations_per_tag,
            "budget_per_minute": self.budget_per_minute,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise errors.ConfigError(
                    f"tags setting {name} must be a positive number, got {value!r}"
                )
        if not self.lease_retry < self.lease_renew_deadline < self.lease_duration:
            raise errors.ConfigError(
                "tags settings: need lease_retry < lease_renew_deadline < lease_duration (got "
                f"{self.lease_retry:g} < {self.lease_renew_deadline:g} < "
                f"{self.lease_duration:g}): a leader must give up before another may take over"
            )
        if not self.lease_name:
            raise errors.ConfigError("tags setting lease_name must not be empty")


WriteKind = Literal["create", "status", "conflict", "failed"]
WatchOutcome = Literal["unchanged", "moved", "tag-missing", "digest-missing", "error"]
RollOutcome = Literal["rolled", "denied", "failed"]


class TagMetrics(Protocol):
    """What the writer and the drift watch count (``controller.metrics.Metrics`` implements
    it when wired; :class:`Counters` in tests)."""

    def count_tag_write(self, kind: WriteKind) -> None:
        """A record created, a status patched, a 409 re-read, a write given up."""
        ...

    def count_tag_drop(self) -> None:
        """An observation dropped: the queue was full."""
        ...

    def count_drift_check(self, registry: str, outcome: WatchOutcome) -> None: ...

    def count_tag_move(self, seen_by: str) -> None: ...

    def count_budget_wait(self, registry: str, seconds: float) -> None:
        """The watch waited for ``registry``'s budget."""
        ...

    def count_roll_forward(self, outcome: RollOutcome) -> None:
        """A workload that follows its tag re-pinned (``rolled``), refused by admission
        (``denied``) or by the apiserver otherwise (``failed``)."""
        ...


@dataclass
class Counters:
    """:class:`TagMetrics` in memory."""

    writes: Counter[str] = field(default_factory=Counter)
    drops: int = 0
    checks: Counter[tuple[str, str]] = field(default_factory=Counter)
    moves: Counter[str] = field(default_factory=Counter)
    budget_waits: Counter[str] = field(default_factory=Counter)
    budget_waited: float = 0.0
    roll_forwards: Counter[str] = field(default_factory=Counter)

    def count_tag_write(self, kind: WriteKind) -> None:
        self.writes[kind] += 1

    def count_tag_drop(self) -> None:
        self.drops += 1

    def count_drift_check(self, registry: str, outcome: WatchOutcome) -> None:
        self.checks[registry, outcome] += 1

    def count_tag_move(self, seen_by: str) -> None:
        self.moves[seen_by] += 1

    def count_budget_wait(self, registry: str, seconds: float) -> None:
        self.budget_waits[registry] += 1
        self.budget_waited += seconds

    def count_roll_forward(self, outcome: RollOutcome) -> None:
        self.roll_forwards[outcome] += 1
