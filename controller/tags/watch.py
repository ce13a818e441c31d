"""The drift watch: re-resolve the tags workloads use and report what changed.

Run only by the replica holding the Lease (:mod:`controller.tags.lease`). Every ``interval``
seconds (a pass that takes longer is followed by the next at once), for each record with
workloads pinned (``inUse > 0``), per registry, least recently checked first, within the
registry's budget (:class:`Budget`: requests paced evenly, ``budget_per_minute``):

1. ``HEAD`` the tag's manifest (:meth:`TagRegistry.head_digest`: the digest only, no body;
   a HEAD does not count against Docker Hub's pull limit).
2. Same digest: :class:`~controller.tags.model.Checked` (``lastChecked`` is written now and
   then, not every pass). Another digest: a verified ``GET`` of the manifest by that digest
   (the registry client checks the bytes hash to it), then
   :class:`~controller.tags.model.Resolved` seen by the watch (the record's history, the
   ``Moved`` condition) and an Event on every listed workload that still pins the old digest:
   ``TagMoved`` (Normal), or ``ImmutableTagMoved`` (Warning) for a tag under
   ``tags.immutable``.
3. Every other digest workloads pin: ``HEAD`` by digest. 404: :class:`~controller.tags.model.
   Missing` (condition ``DigestMissing``) and a Warning Event ``PinnedDigestMissing`` on the
   workloads that still pin it (once per digest); found again: :class:`~controller.tags.model.
   Present`.

Before an Event, the workload is read (:class:`Workloads`): a deleted one, or one that no
longer mentions the digest, gets no Event and leaves the record
(:class:`~controller.tags.model.Unpinned`; one that pins the tag's current digest instead is
recorded there, :class:`~controller.tags.model.Pinned`). Records change only through the
writer's queue (:class:`Book`), so the watch and admissions never race on a record.

Roll-forward (:mod:`controller.tags.follow`): a workload annotated ``kitpin.dev/follow:
"true"`` that pins an older digest of a tag that is not under ``tags.immutable`` is replaced
with its sites re-pinned to the current digest; the update goes through kitpin's own
webhooks, so every policy judges the new digest. Event ``RolledForward`` (old and new digest)
and the workload recorded at the new digest; a refusal gives ``RollForwardDenied`` (by a
webhook) or ``RollForwardFailed`` (otherwise), once per workload and digest while this
replica leads. It is level-triggered: a move the watch sees rolls the followers it reads for
its ``TagMoved`` Events at once; on every pass, the other workloads listed on an older digest
are read (at most every :data:`FOLLOW_RECHECK` seconds each) to find followers, so a move
first seen by an admission, an annotation added later, a conflict or a new leader are all
caught up with.

The registry, credentials, workloads and Events are Protocols; :class:`ApiWorkloads` and
:class:`ApiEvents` implement the last two over :mod:`controller.kubeapi`. This module imports
no kopf.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from controller import errors, kubeapi, refs, types
from controller.tags import follow, model
from controller.tags.settings import Counters, TagMetrics, TagsSettings, WatchOutcome

__all__ = [
    "ApiEvents",
    "ApiWorkloads",
    "Book",
    "Budget",
    "DriftWatch",
    "EventSink",
    "EventType",
    "TagCredentials",
    "TagRegistry",
    "Workloads",
]

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
EVENT_MESSAGE_LIMIT: Final = 1024
CALL_TIMEOUT: Final = 5.0
FOLLOW_RECHECK: Final = 600.0
"""Seconds before a workload on an older digest found not to follow its tag is read again
(an annotation added later is noticed within this); a workload the watch reads for an Event
is judged at once."""
FOLLOW_REMEMBERED: Final = 10_000
"""Workloads whose follow annotation the watch remembers (then it starts again)."""


# -- what the watch calls ------------------------------------------------------------------


class TagRegistry(Protocol):
    """The registry side (``controller.registry.RegistryClient``). Raises only
    :class:`controller.errors.RegistryError` subclasses; :class:`~controller.errors.
    NotFoundError` for a 404."""

    async def head_digest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> str:
        """``HEAD`` of the manifest ``ref`` names (its digest when it has one, else its
        tag): the ``Docker-Content-Digest`` answered, ``sha256:<64 hex>``."""
        ...

    async def get_manifest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> types.Manifest:
        """The verified manifest (its digest computed from the bytes received)."""
        ...


class TagCredentials(Protocol):
    """The credential for a tag that workloads in ``namespaces`` use (their pull secrets,
    then the central ones)."""

    async def credential(
        self, ref: refs.Reference, *, namespaces: Sequence[str]
    ) -> types.Credential | None: ...


class Workloads(Protocol):
    async def get(self, workload: model.Workload) -> Mapping[str, Any] | None:
        """The live object, None when it is gone."""
        ...

    async def replace(self, workload: model.Workload, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Replace the object with ``obj`` (an update carrying the ``resourceVersion`` it was
        read at: :class:`controller.kubeapi.ConflictError` when it changed since); the
        stored object. Through the apiserver's admission, kitpin's webhooks included."""
        ...


class EventSink(Protocol):
    async def emit(
        self, obj: Mapping[str, Any], *, event_type: EventType, reason: str, message: str
    ) -> None:
        """An Event about ``obj`` (a live object, so its uid is known)."""
        ...


class Book(Protocol):
    """The records and the way to change them (:class:`controller.tags.writer.TagWriter`)."""

    def records(self) -> list[model.TagRecord]: ...

    def observe(self, key: model.TagKey, obs: model.Observation) -> bool: ...


# -- the budget ----------------------------------------------------------------------------


class Budget:
    """``per_minute`` requests per registry, paced evenly: a token bucket of one token
    refilled every ``60 / per_minute`` seconds, so no minute (any 60 s) holds more than
    ``per_minute`` requests. A slot is reserved before waiting: concurrent callers queue."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: TagMetrics | None = None,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.spacing = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics
        self._next: dict[str, float] = {}

    async def take(self, registry: str) -> None:
        now = self._clock()
        slot = max(now, self._next.get(registry, -math.inf))
        self._next[registry] = slot + self.spacing
        if slot > now:
            if self._metrics is not None:
                self._metrics.count_budget_wait(registry, slot - now)
            await self._sleep(slot - now)


# -- the watch -----------------------------------------------------------------------------


class DriftWatch:
    def __init__(
        self,
        book: Book,
        registry: TagRegistry,
        *,
        credentials: TagCredentials | None = None,
        workloads: Workloads | None = None,
        events: EventSink | None = None,
        immutable: Callable[[model.TagKey], bool] = lambda _: False,
        settings: TagsSettings | None = None,
        metrics: TagMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._book = book
        self._registry = registry
        self._credentials = credentials
        self._workloads = workloads
        self._events = events
        self._immutable = immutable
        self._settings = settings or TagsSettings()
        self.metrics: TagMetrics = metrics if metrics is not None else Counters()
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self.budget = Budget(
            self._settings.budget_per_minute, clock=clock, sleep=sleep, metrics=self.metrics
        )
        self._checked: dict[str, float] = {}
        """Monotonic time this replica last checked each record (the order of the next pass)."""
        self._announced: set[tuple[str, str, str]] = set()
        """(record, digest, reason) already announced: a record that has not caught up yet
        does not make the same Events twice."""
        self._follows: dict[str, tuple[bool, float]] = {}
        """Workload key → (follows its tags, monotonic time read): see FOLLOW_RECHECK."""
        self._rolled: set[tuple[str, str, str]] = set()
        """(workload, old digest, new digest) rolled forward or refused: tried once while
        this replica leads (a conflict or an unreachable apiserver is tried again)."""

    async def run(self) -> None:
        """Forever (cancelled when the Lease is lost): a pass, then the rest of the interval."""
        while True:
            started = self._clock()
            try:
                await self.cycle()
            except Exception:  # the loop must survive anything; the next pass retries
                logger.exception("a pass of the drift watch failed")
            await self._sleep(max(0.0, self._settings.drift_interval - (self._clock() - started)))

    def due(self) -> dict[str, list[model.TagRecord]]:
        """The records in use, by registry, least recently checked first."""
        by_registry: dict[str, list[model.TagRecord]] = defaultdict(list)
        for record in self._book.records():
            if record.status is not None and record.status.in_use > 0:
                by_registry[record.key.registry].append(record)
        for records in by_registry.values():
            records.sort(key=self._order)
        return dict(by_registry)

    def _order(self, record: model.TagRecord) -> tuple[float, float]:
        mine = self._checked.get(record.name, -math.inf)
        stored = record.status.last_checked if record.status is not None else None
        return mine, stored.timestamp() if stored is not None else -math.inf

    async def cycle(self) -> None:
        """One pass over the records in use; registries in parallel, each within its budget."""
        due = self.due()
        await asyncio.gather(*(self._check_all(registry, rs) for registry, rs in due.items()))

    async def _check_all(self, registry: str, records: Sequence[model.TagRecord]) -> None:
        for record in records:
            try:
                await self.check(record)
            except Exception:
                logger.exception("checking %s failed", record.key)
                self.metrics.count_drift_check(registry, "error")

    async def check(self, record: model.TagRecord) -> None:
        """Check one record (see the module docstring)."""
        status, key = record.status, record.key
        if status is None:
            return
        try:
            ref = model.reference_of(key)
        except errors.ReferenceError as e:
            logger.warning("record %s names no usable reference: %s", record.name, e)
            return
        namespaces = sorted({w.namespace for u in status.digests for w in u.workloads})
        credential = (
            await self._credentials.credential(ref, namespaces=namespaces)
            if self._credentials is not None
            else None
        )
        self._checked[record.name] = self._clock()
        outcome: WatchOutcome
        current: str | None
        await self.budget.take(key.registry)
        try:
            current = await self._registry.head_digest(ref, credential=credential)
            outcome = "unchanged"
        except errors.NotFoundError:
            current, outcome = None, "tag-missing"
        except errors.RegistryError as e:
            logger.info("drift watch: HEAD %s: %s", key, e)
            self.metrics.count_drift_check(key.registry, "error")
            return
        if current is not None and current != status.current_digest:
            await self.budget.take(key.registry)
            try:
                manifest = await self._registry.get_manifest(
                    ref.with_digest(current), credential=credential
                )
            except errors.RegistryError as e:
                logger.info("drift watch: GET %s@%s: %s", key, current, e)
                self.metrics.count_drift_check(key.registry, "error")
                return
            current, outcome = manifest.digest, "moved"
            await self._moved(record, status, current)
        elif current is not None:
            self._book.observe(key, model.Checked(at=self._now()))
        self.metrics.count_drift_check(key.registry, outcome)
        for use in status.digests:
            if use.workload_count and use.digest != current:
                await self._check_digest(record, ref, use, credential)
        if current is not None and not self._immutable(key):
            for use in status.digests:
                if use.workloads and use.digest != current:
                    await self._followers(key, use, current)

    async def _moved(self, record: model.TagRecord, status: model.TagStatus, new: str) -> None:
        key, old = record.key, status.current_digest
        immutable = self._immutable(key)
        self._book.observe(
            key, model.Resolved(digest=new, at=self._now(), seen_by="watch", immutable=immutable)
        )
        reason = model.Reason.IMMUTABLE_TAG_MOVED if immutable else model.Reason.TAG_MOVED
        if (record.name, f"{old}>{new}", reason) in self._announced:
            return
        self._announced.add((record.name, f"{old}>{new}", reason))
        use = status.use(old)
        if use is None:
            return
        when = types.rfc3339(self._now())
        if immutable:
            message = (
                f"{key} is under tags.immutable but moved: first seen as "
                f"{status.first_digest} at {types.rfc3339(status.first_seen)}, now {new} "
                f"(seen by kitpin's drift watch at {when}); this workload still pins {old}"
            )
        else:
            message = (
                f"{key} moved from {old} to {new} (seen by kitpin's drift watch at {when}); "
                f"this workload still pins {old}. kubectl describe mkt {record.name}"
            )
        await self._announce(
            key,
            use,
            event_type="Warning" if immutable else "Normal",
            reason=reason,
            message=message,
            current=new,
            roll=not immutable,
        )

    async def _check_digest(
        self,
        record: model.TagRecord,
        ref: refs.Reference,
        use: model.DigestUse,
        credential: types.Credential | None,
    ) -> None:
        key = record.key
        await self.budget.take(key.registry)
        try:
            await self._registry.head_digest(ref.with_digest(use.digest), credential=credential)
        except errors.NotFoundError:
            self.metrics.count_drift_check(key.registry, "digest-missing")
            self._book.observe(key, model.Missing(digest=use.digest, at=self._now()))
            mark = (record.name, use.digest, model.Reason.PINNED_DIGEST_MISSING)
            if use.missing_since is not None or mark in self._announced:
                return
            self._announced.add(mark)
            current = record.status.current_digest if record.status else ""
            message = (
                f"{key.registry}/{key.repository}@{use.digest}, which this workload pins (from "
                f"{key}), is gone from the registry: its next Pod cannot pull it. Push it "
                f"again, or re-pin the workload (the tag is now at {current})"
            )
            await self._announce(
                key,
                use,
                event_type="Warning",
                reason=model.Reason.PINNED_DIGEST_MISSING,
                message=message,
                current=current or None,
            )
            return
        except errors.RegistryError as e:
            logger.info("drift watch: HEAD %s@%s: %s", key, use.digest, e)
            self.metrics.count_drift_check(key.registry, "error")
            return
        self._announced.discard((record.name, use.digest, model.Reason.PINNED_DIGEST_MISSING))
        if use.missing_since is not None:
            self._book.observe(key, model.Present(digest=use.digest, at=self._now()))

    async def _announce(
        self,
        key: model.TagKey,
        use: model.DigestUse,
        *,
        event_type: EventType,
        reason: str,
        message: str,
        current: str | None = None,
        roll: bool = False,
    ) -> None:
        """An Event on every listed workload that still pins ``use.digest``; the others leave
        the record. With ``roll``, a workload that follows its tag is then rolled forward to
        ``current``."""
        if self._workloads is None or self._events is None:
            return
        for workload in use.workloads:
            obj = await self._read(key, workload, use.digest, current)
            if obj is None:
                continue
            await self._emit(workload, obj, event_type=event_type, reason=reason, message=message)
            if roll and current is not None and follow.follows(obj):
                await self._roll_forward(key, workload, obj, use.digest, current)

    async def _read(
        self, key: model.TagKey, workload: model.Workload, digest: str, current: str | None
    ) -> Mapping[str, Any] | None:
        """The live ``workload`` if it still pins ``digest``, else None: a deleted one leaves
        the record; one that moved on leaves ``digest`` (and is recorded at ``current`` when
        it pins that). Its follow annotation is remembered."""
        assert self._workloads is not None
        try:
            obj = await self._workloads.get(workload)
        except kubeapi.KubeError as e:
            logger.info("cannot read %s: %s", workload.key, e)
            return None
        if obj is None:
            self._follows.pop(workload.key, None)
            self._book.observe(key, model.Unpinned(workload=workload))
            return None
        if len(self._follows) >= FOLLOW_REMEMBERED:
            self._follows.clear()
        self._follows[workload.key] = (follow.follows(obj), self._clock())
        if not model.mentions(obj, digest):
            if current is not None and model.mentions(obj, current):
                self._book.observe(
                    key, model.Pinned(digest=current, workload=workload, at=self._now())
                )
            else:
                self._book.observe(key, model.Unpinned(workload=workload, digest=digest))
            return None
        return obj

    async def _emit(
        self,
        workload: model.Workload,
        obj: Mapping[str, Any],
        *,
        event_type: EventType,
        reason: str,
        message: str,
    ) -> None:
        assert self._events is not None
        try:
            await self._events.emit(obj, event_type=event_type, reason=reason, message=message)
        except kubeapi.KubeError as e:
            logger.warning("cannot create an Event for %s: %s", workload.key, e)

    # -- roll-forward --------------------------------------------------------------------

    async def _followers(self, key: model.TagKey, use: model.DigestUse, current: str) -> None:
        """Roll forward every workload listed on ``use.digest`` (older than ``current``)
        that follows its tag; workloads known not to follow are read again only after
        :data:`FOLLOW_RECHECK` seconds."""
        if self._workloads is None or self._events is None:
            return
        for workload in use.workloads:
            if (workload.key, use.digest, current) in self._rolled:
                continue
            known = self._follows.get(workload.key)
            if known is not None and not known[0] and self._clock() - known[1] < FOLLOW_RECHECK:
                continue
            obj = await self._read(key, workload, use.digest, current)
            if obj is not None and follow.follows(obj):
                await self._roll_forward(key, workload, obj, use.digest, current)

    async def _roll_forward(
        self,
        key: model.TagKey,
        workload: model.Workload,
        obj: Mapping[str, Any],
        old: str,
        new: str,
    ) -> None:
        """Replace ``obj`` with its sites of ``key`` re-pinned from ``old`` to ``new``
        (:func:`controller.tags.follow.plan`), through the apiserver's admission."""
        assert self._workloads is not None
        mark = (workload.key, old, new)
        if mark in self._rolled:
            return
        if not follow.rollable(obj):
            self._rolled.add(mark)
            logger.info("%s follows %s; its template cannot change: not rolled", workload.key, key)
            return
        rolled = follow.plan(obj, key, old, new, at=self._now())
        if rolled is None:
            self._rolled.add(mark)  # the digest is the user's own, or not this tag's
            logger.info("%s pins %s of %s but kitpin did not pin it there", workload.key, old, key)
            return
        try:
            stored = await self._workloads.replace(workload, rolled)
        except (kubeapi.ConflictError, kubeapi.UnreachableError) as e:
            logger.info("rolling %s forward: %s; the next pass tries again", workload.key, e)
            return
        except kubeapi.ApiError as e:
            self._rolled.add(mark)
            denied = "admission webhook" in e.message
            self.metrics.count_roll_forward("denied" if denied else "failed")
            verb = "refused by admission" if denied else "refused by the apiserver"
            await self._emit(
                workload,
                obj,
                event_type="Warning",
                reason=follow.Reason.DENIED if denied else follow.Reason.FAILED,
                message=(
                    f"{key} moved from {old} to {new}; kitpin.dev/follow asked to re-pin this "
                    f"workload, {verb}, so it keeps {old}: {e.message or e}"
                ),
            )
            return
        self._rolled.add(mark)
        self.metrics.count_roll_forward("rolled")
        self._book.observe(key, model.Pinned(digest=new, workload=workload, at=self._now()))
        logger.info("rolled %s forward: %s from %s to %s", workload.key, key, old, new)
        await self._emit(
            workload,
            stored,
            event_type="Normal",
            reason=follow.Reason.ROLLED_FORWARD,
            message=(
                f"{key} moved from {old} to {new}; kitpin re-pinned this workload to {new} "
                f"(kitpin.dev/follow), admitted by its policies; its template changed once"
            ),
        )


# -- over kubeapi --------------------------------------------------------------------------

PLURALS: Final = {
    "Pod": "pods",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "ReplicaSet": "replicasets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "InferenceService": "inferenceservices",
    "ServingRuntime": "servingruntimes",
    "ClusterServingRuntime": "clusterservingruntimes",
}


def plural_of(kind: str, known: Mapping[str, str] = PLURALS) -> str:
    """The resource of ``kind``: known ones, else the English plural of the lowercased kind
    (what CRDs use almost always; pass ``known`` from discovery for the rest)."""
    if kind in known:
        return known[kind]
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    return lower + "s"


def workload_path(workload: model.Workload, plurals: Mapping[str, str] = PLURALS) -> str:
    group, _, version = workload.api_version.rpartition("/")
    prefix = ["apis", group, version] if group else ["api", version or "v1"]
    return kubeapi.path(
        *prefix, "namespaces", workload.namespace, plural_of(workload.kind, plurals), workload.name
    )


class ApiWorkloads:
    """:class:`Workloads` over :class:`controller.kubeapi.KubeAPI` (``get`` on the kinds
    kitpin pins: RBAC in the chart)."""

    def __init__(
        self,
        api: kubeapi.KubeAPI[Any],
        *,
        plurals: Mapping[str, str] = PLURALS,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._api = api
        self._plurals = plurals
        self._timeout = timeout

    async def get(self, workload: model.Workload) -> Mapping[str, Any] | None:
        try:
            return await self._api.get(
                workload_path(workload, self._plurals), timeout=self._timeout
            )
        except kubeapi.NotFoundError:
            return None

    async def replace(self, workload: model.Workload, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """A PUT of ``obj`` (``update`` on the kind: RBAC in the chart); its
        ``resourceVersion`` makes a concurrent change a 409."""
        return await self._api.request(
            "PUT", workload_path(workload, self._plurals), body=obj, timeout=self._timeout
        )


class ApiEvents:
    """:class:`EventSink` over :class:`controller.kubeapi.KubeAPI`: a core/v1 Event in the
    object's namespace (as :mod:`controller.audit` writes them)."""

    def __init__(
        self,
        api: kubeapi.KubeAPI[Any],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        instance: str | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._api = api
        self._now = now
        self._instance = instance or socket.gethostname()
        self._timeout = timeout

    async def emit(
        self, obj: Mapping[str, Any], *, event_type: EventType, reason: str, message: str
    ) -> None:
        event = self.event(obj, event_type=event_type, reason=reason, message=message)
        namespace = event["metadata"]["namespace"]
        where = kubeapi.path("api", "v1", "namespaces", namespace, "events")
        await self._api.post(where, event, timeout=self._timeout)

    def event(
        self, obj: Mapping[str, Any], *, event_type: EventType, reason: str, message: str
    ) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        involved = {
            "apiVersion": str(obj.get("apiVersion") or ""),
            "kind": str(obj.get("kind") or ""),
            "name": str(meta.get("name") or ""),
            "namespace": namespace,
            "uid": str(meta.get("uid") or ""),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
        }
        stamp = types.rfc3339(self._now())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "kitpin-", "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "type": event_type,
            "source": {"component": "kitpin"},
            "reportingComponent": "kitpin.dev/kitpin",
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
