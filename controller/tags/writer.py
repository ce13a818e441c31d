"""Writing ModelKitTag records from the admission path without slowing it.

Admission calls :meth:`TagWriter.observe_admission` (or :meth:`~TagWriter.observe`):
synchronous, no I/O, constant work. It compares the observation with the record the replica
already knows (:func:`controller.tags.model.is_news`): a cached review that shows nothing new
queues nothing. News is queued per record, coalesced (the same news twice is kept once), in a
bounded queue: when it is full the observation is dropped and counted, the review never waits.

A cached review must cost almost nothing, so :meth:`TagWriter.observe_admission` answers it
from a memo before building any observation: per tag (``registry``, ``repository``, ``tag``,
the reference's own fields: no string is built), the digest the stored record holds as current
and the workloads already known to pin it (:class:`_Known`). A review of a listed workload at
that digest is one dict lookup, a string compare and a set lookup. The memo is learnt from
:func:`~controller.tags.model.is_news` saying "nothing new" and forgotten whenever the record
changes (:meth:`TagWriter.remember`, :meth:`TagWriter.forget`), so it never answers for a
record it has not checked.

A background task (:meth:`TagWriter.run`) flushes every ``flush_interval`` seconds, one record
at a time per name, a few names at once:

- a tag the replica does not know yet: one create of the ``ModelKitTag`` (``spec`` and the
  first sighting in the ``kitpin.dev/first-seen`` annotation). On 409 AlreadyExists another
  replica's create won: re-read it and merge (its first sighting is the first-seen digest:
  **the first create wins**);
- then one merge patch of ``status``, computed by the pure transitions of ``model`` from the
  stored status, carrying the ``resourceVersion`` it was computed from. On 409 Conflict
  another writer came first: re-read, re-apply the same observations, patch again (a few
  times, then the observations wait for the next flush). Nothing is lost or applied twice:
  the transitions are idempotent for the same observation.

The records the replica knows come from a paged list-and-watch of ``modelkittags``
(:mod:`.informer`; :meth:`remember` / :meth:`forget`) and from every write's answer. The
drift watch reads them (:meth:`records`) and writes through the same queue.

This module imports no kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from controller import kubeapi, refs, types
from controller.tags import model, wire
from controller.tags.settings import Counters, TagMetrics, TagsSettings

__all__ = [
    "AlreadyExistsError",
    "ApiTagStore",
    "ConflictError",
    "GoneError",
    "TagStore",
    "TagWriter",
    "object_path",
]

logger = logging.getLogger(__name__)

WRITE_TIMEOUT: Final = 5.0
ATTEMPTS: Final = 4
"""Re-reads after a 409 within one flush before the observations wait for the next."""
CONCURRENCY: Final = 8
"""Records written at once."""
UNLISTED_REMEMBERED: Final = 10_000
"""Workloads remembered as counted while a digest's list was full (so their next reviews
queue nothing)."""
KNOWN_WORKLOADS: Final = 1024
"""Workloads a tag's memo holds (:class:`_Known`); beyond, it starts again (the next reviews
take the full comparison once each)."""


class AlreadyExistsError(Exception):
    """The create lost: the record exists."""


class ConflictError(Exception):
    """The record changed since the status was computed."""


class GoneError(Exception):
    """The record was deleted."""


class TagStore(Protocol):
    """The apiserver, as the writer needs it."""

    async def get(self, name: str) -> Mapping[str, Any] | None:
        """The stored record, None when there is none."""
        ...

    async def create(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create; return the stored object; :class:`AlreadyExistsError` on 409."""
        ...

    async def patch_status(
        self, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> Mapping[str, Any]:
        """Merge-patch ``status``; :class:`ConflictError` on 409, :class:`GoneError` on 404."""
        ...


@dataclass(slots=True, kw_only=True)
class _Known:
    """The memo of one tag for cached reviews: the stored record's current digest and the
    workloads whose resolution to it is no news (listed, or counted beyond a full list).
    Valid for one version of the record: dropped when it changes."""

    digest: str
    settled: bool
    """No ``tags.immutable`` rule can make a resolution to ``digest`` news: it is the
    first-seen digest, or ``ImmutableTagMoved`` is already True."""
    workloads: set[str] = field(default_factory=set)
    """``Workload.key`` of each workload known; "" stands for "no workload" (a Pod without
    a name)."""


_NO_OBJECT: Final = object()


@dataclass(kw_only=True)
class _Pending:
    key: model.TagKey
    observations: list[model.Observation] = field(default_factory=list)
    seen: set[tuple[str, ...]] = field(default_factory=set)


class TagWriter:
    def __init__(
        self,
        store: TagStore,
        *,
        settings: TagsSettings | None = None,
        metrics: TagMetrics | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._settings = settings or TagsSettings()
        self.metrics: TagMetrics = metrics if metrics is not None else Counters()
        self._now = now
        self._records: dict[str, tuple[int, model.TagRecord]] = {}
        self._known: dict[tuple[str, str, str], _Known] = {}
        self._last: tuple[object, str, model.Workload | None, str] = (_NO_OBJECT, "", None, "")
        """The object of the last admission, its namespace, workload and workload key: a
        review with several references computes its workload once. Holding the object keeps
        its identity from being reused."""
        self._pending: dict[str, _Pending] = {}
        self._unlisted: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._wakeup = asyncio.Event()

    # -- fed by the watch of modelkittags ------------------------------------------------

    def remember(self, body: Mapping[str, Any]) -> None:
        """Keep the newest stored version of a record (a write's answer may be newer than a
        late watch event: the higher resourceVersion wins)."""
        record = wire.record_from_object(body)
        if record is None:
            return
        rv = record.resource_version
        order = int(rv) if rv and rv.isdigit() else -1
        known = self._records.get(record.name)
        if known is None or order >= known[0]:
            self._records[record.name] = (order, record)
            self._unknow(record.key)

    def forget(self, name: str) -> None:
        known = self._records.pop(name, None)
        if known is not None:
            self._unknow(known[1].key)

    def _unknow(self, key: model.TagKey) -> None:
        self._known.pop((key.registry, key.repository, key.tag), None)

    def record(self, key: model.TagKey) -> model.TagRecord | None:
        """The record of ``key`` as this replica knows it (for ``tags.immutable``: its
        first-seen digest)."""
        known = self._records.get(key.name)
        return None if known is None else known[1]

    def records(self) -> list[model.TagRecord]:
        return [record for _, record in self._records.values()]

    @property
    def pending(self) -> int:
        """Tags with observations waiting."""
        return len(self._pending)

    @property
    def known(self) -> int:
        """Records this replica knows."""
        return len(self._records)

    # -- fed by admissions and the drift watch -------------------------------------------

    def observe_resolution(
        self,
        resolution: types.Resolution,
        *,
        workload: model.Workload | None = None,
        immutable: bool = False,
    ) -> bool:
        """:meth:`observe` of a resolution made at admission."""
        obs = model.Resolved(
            digest=resolution.digest,
            at=resolution.resolved_at,
            seen_by="admission",
            workload=workload,
            immutable=immutable,
        )
        return self.observe(model.key_of(resolution.reference), obs)

    def observe_admission(
        self,
        resolution: types.Resolution,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        immutable: bool = False,
    ) -> bool:
        """:meth:`observe_resolution` for the admitted ``obj``: its owner-level workload
        (:func:`controller.tags.model.workload_of`) is recorded as pinned to the digest.

        The admission path's hook: a cached review (the tag at its recorded digest, the
        workload known) is answered from the memo (see the module docstring) without
        building an observation."""
        last = self._last
        if last[0] is obj and last[1] == namespace:
            workload, workload_key = last[2], last[3]
        else:
            workload = model.workload_of(obj, namespace)
            workload_key = "" if workload is None else workload.key
            self._last = (obj, namespace, workload, workload_key)
        ref = resolution.reference
        known = self._known.get((ref.registry, ref.repository, ref.tag))
        if (
            known is not None
            and known.digest == resolution.digest
            and (known.settled or not immutable)
            and workload_key in known.workloads
        ):
            return False
        return self.observe_resolution(resolution, workload=workload, immutable=immutable)

    def observe_kept(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        at: datetime,
    ) -> bool:
        """``obj`` keeps ``digest`` of ``ref``'s tag without a resolution (an UPDATE that
        kept the old object's digest)."""
        workload = model.workload_of(obj, namespace)
        if workload is None:
            return False
        return self.observe(
            model.key_of(ref), model.Pinned(digest=digest, workload=workload, at=at)
        )

    def first_seen(self, ref: refs.Reference) -> tuple[str, datetime] | None:
        """The first digest recorded for ``ref``'s tag and when (trust on first use for
        ``tags.immutable``), as this replica knows it; None for a tag it has no record of."""
        record = self.record(model.key_of(ref))
        if record is None or record.status is None:
            return None
        return record.status.first_digest, record.status.first_seen

    def observe(self, key: model.TagKey, obs: model.Observation) -> bool:
        """Queue ``obs`` of ``key`` if it is news; True when queued. No I/O, never blocks."""
        name = key.name
        known = self._records.get(name)
        status = None if known is None else known[1].status
        pending = self._pending.get(name)
        if known is not None and not model.is_news(
            status, obs, checked_every=self._settings.checked_write_every
        ):
            if status is not None:
                self._learn(key, status, obs)
            return False
        if known is None and pending is None and not isinstance(obs, model.Resolved):
            return False  # a record starts with a resolution
        unlisted = None if status is None else self._unlisted_mark(name, status, obs)
        if unlisted is not None and unlisted in self._unlisted:
            self._unlisted.move_to_end(unlisted)
            if status is not None:
                self._learn(key, status, obs)
            return False  # counted already while the list was full
        seen = model.coalesce_key(obs)
        if pending is None:
            if len(self._pending) >= self._settings.queue_size:
                self.metrics.count_tag_drop()
                return False
            pending = self._pending[name] = _Pending(key=key)
        elif seen in pending.seen:
            return False
        elif len(pending.observations) >= self._settings.observations_per_tag:
            self.metrics.count_tag_drop()
            return False
        pending.observations.append(obs)
        pending.seen.add(seen)
        if unlisted is not None:
            self._unlisted[unlisted] = None
            if len(self._unlisted) > UNLISTED_REMEMBERED:
                self._unlisted.popitem(last=False)
        return True

    def _learn(self, key: model.TagKey, status: model.TagStatus, obs: model.Observation) -> None:
        """Remember that ``obs``, a resolution at admission that was no news, will be no
        news again while the record stays as it is (only for the record's current digest:
        a resolution to an older one depends on its time)."""
        if (
            not isinstance(obs, model.Resolved)
            or obs.seen_by != "admission"
            or obs.digest != status.current_digest
        ):
            return
        memo_key = (key.registry, key.repository, key.tag)
        known = self._known.get(memo_key)
        if known is None or known.digest != obs.digest:
            moved = status.condition(model.ConditionType.IMMUTABLE_TAG_MOVED)
            settled = obs.digest == status.first_digest or (
                moved is not None and moved.status == "True"
            )
            known = self._known[memo_key] = _Known(digest=obs.digest, settled=settled)
        if len(known.workloads) >= KNOWN_WORKLOADS:
            known.workloads.clear()
        known.workloads.add("" if obs.workload is None else obs.workload.key)

    def _unlisted_mark(
        self, name: str, status: model.TagStatus, obs: model.Observation
    ) -> tuple[str, str, str] | None:
        """For an observation whose only news is a workload beyond a full list (counted, not
        listed): the mark that keeps it from being counted again by this replica."""
        if not isinstance(obs, model.Resolved | model.Pinned) or obs.workload is None:
            return None
        use = status.use(obs.digest)
        if use is None or use.lists(obs.workload) or len(use.workloads) < model.WORKLOADS_LISTED:
            return None
        if isinstance(obs, model.Resolved) and model.is_news(
            status,
            dataclasses.replace(obs, workload=None),
            checked_every=self._settings.checked_write_every,
        ):
            return None  # news besides the workload (a move): never held back
        return (name, obs.digest, obs.workload.key)

    # -- the flush loop ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.flush_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:  # the loop must survive anything; the next flush retries
                logger.exception("writing ModelKitTag records failed")

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str, item: _Pending) -> None:
            async with limit:
                if not await self._write(name, item):
                    self._requeue(name, item)

        await asyncio.gather(*(one(name, item) for name, item in pending.items()))

    def _requeue(self, name: str, item: _Pending) -> None:
        newer = self._pending.get(name)
        if newer is None:
            if len(self._pending) >= self._settings.queue_size:
                self.metrics.count_tag_drop()
                return
            self._pending[name] = item
            return
        for obs in reversed(item.observations):  # older first
            seen = model.coalesce_key(obs)
            if seen not in newer.seen:
                newer.observations.insert(0, obs)
                newer.seen.add(seen)

    async def _write(self, name: str, item: _Pending) -> bool:
        """Write ``item``'s observations; False when they must wait for the next flush."""
        known = self._records.get(name)
        record = None if known is None else known[1]
        try:
            for _ in range(ATTEMPTS):
                if record is None:
                    record = await self._create_or_read(name, item)
                    if record is None:
                        return True  # nothing to create from
                status = model.apply_all(record.status, item.observations, now=self._now())
                if status is None:
                    return True
                doc = wire.status_to_wire(status, record.key)
                if (
                    record.status_written
                    and record.status is not None
                    and wire.status_to_wire(record.status, record.key) == doc
                ):
                    return True
                try:
                    stored = await self._store.patch_status(name, doc, record.resource_version)
                except ConflictError:
                    self.metrics.count_tag_write("conflict")
                    record = await self._read(name)
                    continue
                except GoneError:
                    self.forget(name)
                    record = None
                    continue
                self.metrics.count_tag_write("status")
                self._count_moves(record.status, status)
                self.remember(stored)
                return True
        except kubeapi.UnreachableError as e:
            logger.warning("cannot write the ModelKitTag of %s now: %s", item.key, e)
            return False
        except kubeapi.ApiError as e:  # Forbidden, Invalid...: retrying will not help
            self.metrics.count_tag_write("failed")
            logger.warning("cannot write the ModelKitTag of %s: %s", item.key, e)
            return True
        logger.info("the ModelKitTag of %s keeps changing; its news waits a flush", item.key)
        return False

    async def _create_or_read(self, name: str, item: _Pending) -> model.TagRecord | None:
        first = next((o for o in item.observations if isinstance(o, model.Resolved)), None)
        if first is None:
            return await self._read(name)
        try:
            stored = await self._store.create(wire.new_object(item.key, first))
        except AlreadyExistsError:
            self.metrics.count_tag_write("conflict")
            return await self._read(name)
        self.metrics.count_tag_write("create")
        self.remember(stored)
        return wire.record_from_object(stored)

    async def _read(self, name: str) -> model.TagRecord | None:
        stored = await self._store.get(name)
        if stored is None:
            self.forget(name)
            return None
        self.remember(stored)
        return wire.record_from_object(stored)

    def _count_moves(self, before: model.TagStatus | None, after: model.TagStatus) -> None:
        known = {(m.from_digest, m.to_digest, m.at) for m in (before.history if before else ())}
        for move in after.history:
            if (move.from_digest, move.to_digest, move.at) not in known:
                self.metrics.count_tag_move(move.seen_by)


def object_path(name: str, *, status: bool = False) -> str:
    """The API path of the ModelKitTag ``name`` (or of its ``status`` subresource)."""
    parts = ["apis", model.GROUP, model.VERSION, model.PLURAL, name]
    return kubeapi.path(*parts, "status") if status else kubeapi.path(*parts)


class ApiTagStore:
    """:class:`TagStore` over :class:`controller.kubeapi.KubeAPI`."""

    def __init__(self, api: kubeapi.KubeAPI[Any], *, timeout: float = WRITE_TIMEOUT) -> None:
        self._api = api
        self._timeout = timeout

    async def get(self, name: str) -> Mapping[str, Any] | None:
        try:
            return await self._api.get(object_path(name), timeout=self._timeout)
        except kubeapi.NotFoundError:
            return None

    async def create(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        where = kubeapi.path("apis", model.GROUP, model.VERSION, model.PLURAL)
        try:
            return await self._api.post(where, body, timeout=self._timeout)
        except kubeapi.ConflictError as e:
            raise AlreadyExistsError(str(e)) from e

    async def patch_status(
        self, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> Mapping[str, Any]:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self._api.patch(
                object_path(name, status=True), body, timeout=self._timeout
            )
        except kubeapi.ConflictError as e:
            raise ConflictError(str(e)) from e
        except kubeapi.NotFoundError as e:
            raise GoneError(str(e)) from e
