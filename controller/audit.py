"""The policy audit trail: violation counters in policy status, Events, metrics.

Admission handlers call :meth:`AuditRecorder.record`, which only queues the violations in
memory and counts the metric, and :meth:`AuditRecorder.notice` for a Warning Event that is
not a policy violation (an object admitted unpinned or unverified under ``failure: warn``):
no API call on the admission path. A background task
(:meth:`AuditRecorder.run`) flushes the queue every ``interval`` seconds:

- per policy, one merge patch of ``status`` (``violations``, ``violationsByRule``,
  ``recentViolations``; built by :func:`controller.policy.record_violations`) carrying the
  ``resourceVersion`` it was computed from. If another replica wrote in between, the apiserver
  answers 409 Conflict and the violations stay queued for the next flush, by which time the
  watch has delivered the newer status: no increment is lost or counted twice;
- one ``Warning`` Event per warn/audit violation on the offending object (enforce violations
  were denied: the object does not exist, the denial message told the user), and one per
  notice, through the same path (the same Event shape, the same object reference).

Every violation is counted in status and metrics, whatever its mode (enforce denials
included: ``status.violations`` is "Violations counted (all modes)" in the CRD); the
entries of ``recentViolations`` carry their mode.

The last known status of each policy comes from the kopf watch (:meth:`observe`) and from
each patch response, so the recorder never needs to read policies itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controller import kubeapi, policy
from controller import metrics as metrics_mod

logger = logging.getLogger(__name__)

EVENT_MESSAGE_LIMIT = 1024

WRITE_TIMEOUT = 5.0
"""Seconds for one write (a status patch, an Event)."""


class ConflictError(Exception):
    """The policy changed since the status the patch was computed from."""


class AuditSink(Protocol):
    """The writes to the apiserver."""

    async def patch_policy_status(
        self, ref: policy.PolicyRef, status: Mapping[str, Any], resource_version: str | None
    ) -> Mapping[str, Any]:
        """Merge-patch ``status``; return the stored object; raise :class:`ConflictError` on 409."""
        ...

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _Pending:
    violations: tuple[policy.Violation, ...]
    object_ref: str
    namespace: str
    involved: Mapping[str, str]
    when: datetime
    notices: tuple[tuple[str, str], ...] = ()
    """(reason, message) of each Event that is not a policy violation."""


class AuditRecorder:
    def __init__(
        self,
        sink: AuditSink,
        *,
        metrics: metrics_mod.Metrics | None = None,
        interval: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._interval = interval
        self._now = now
        self._pending: list[_Pending] = []
        self._statuses: dict[policy.PolicyRef, tuple[int, Mapping[str, Any], str | None]] = {}
        self._wakeup = asyncio.Event()
        self._instance = socket.gethostname()

    # -- fed by the watch ---------------------------------------------------------------

    def observe(self, ref: policy.PolicyRef, body: Mapping[str, Any]) -> None:
        """Remember the newest status seen for ``ref`` (watch events arrive in order, but a
        patch response may be newer than a late event: keep the higher resourceVersion)."""
        meta = body.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        self._remember(ref, body.get("status") or {}, rv or None)

    def forget(self, ref: policy.PolicyRef) -> None:
        self._statuses.pop(ref, None)

    def _remember(self, ref: policy.PolicyRef, status: Mapping[str, Any], rv: str | None) -> None:
        order = int(rv) if rv and rv.isdigit() else -1
        known = self._statuses.get(ref)
        if known is None or order >= known[0]:
            self._statuses[ref] = (order, status, rv)

    # -- fed by admissions --------------------------------------------------------------

    def record(
        self,
        violations: Sequence[policy.Violation],
        *,
        obj: Mapping[str, Any],
        namespace: str,
    ) -> None:
        """Queue ``violations`` found in ``obj``; cheap, no I/O."""
        if not violations:
            return
        if self._metrics is not None:
            for v in violations:
                self._metrics.count_policy_violation(_metric_label(v.policy), v.rule, v.mode)
        self._queue(obj, namespace, violations=tuple(violations))

    def notice(self, *, obj: Mapping[str, Any], namespace: str, reason: str, message: str) -> None:
        """Queue a Warning Event on ``obj`` that is not a policy violation (``reason`` a
        named outcome, e.g. ``AdmittedUnpinned``); written like violations' Events. Cheap,
        no I/O."""
        self._queue(obj, namespace, notices=((reason, message),))

    def _queue(
        self,
        obj: Mapping[str, Any],
        namespace: str,
        *,
        violations: tuple[policy.Violation, ...] = (),
        notices: tuple[tuple[str, str], ...] = (),
    ) -> None:
        meta = obj.get("metadata") or {}
        kind = str(obj.get("kind") or "")
        name = str(meta.get("name") or meta.get("generateName") or "")
        self._pending.append(
            _Pending(
                violations=violations,
                notices=notices,
                object_ref=f"{kind}/{name}",
                namespace=namespace,
                involved={
                    "apiVersion": str(obj.get("apiVersion") or ""),
                    "kind": kind,
                    "name": name,
                    "namespace": namespace,
                    "uid": str(meta.get("uid") or ""),
                },
                when=self._now(),
            )
        )
        if len(self._pending) >= 500:
            self._wakeup.set()

    # -- the flush loop -----------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:  # the loop must survive anything; the next flush retries
                logger.exception("writing the policy audit trail failed")

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        await self._write_events(pending)
        retry: list[_Pending] = []
        by_policy: dict[policy.PolicyRef, list[_Pending]] = {}
        for item in pending:
            for ref in {v.policy for v in item.violations}:
                by_policy.setdefault(ref, []).append(item)
        for ref, items in by_policy.items():
            if not await self._write_status(ref, items):
                retry.extend(
                    _Pending(
                        violations=tuple(v for v in i.violations if v.policy == ref),
                        object_ref=i.object_ref,
                        namespace=i.namespace,
                        involved={},  # its Events were written already
                        when=i.when,
                    )
                    for i in items
                )
        self._pending[:0] = retry

    async def _write_status(self, ref: policy.PolicyRef, items: Sequence[_Pending]) -> bool:
        known = self._statuses.get(ref)
        previous: Mapping[str, Any] = known[1] if known else {}
        rv = known[2] if known else None
        status: Mapping[str, Any] = previous
        for item in items:
            mine = [v for v in item.violations if v.policy == ref]
            status = {
                **status,
                **policy.record_violations(
                    status, mine, object_ref=item.object_ref, namespace=item.namespace,
                    now=item.when,
                ),
            }  # fmt: skip
        patch = {k: status[k] for k in ("violations", "violationsByRule", "recentViolations")}
        try:
            stored = await self._sink.patch_policy_status(ref, patch, rv)
        except ConflictError:
            logger.info("status of %s changed meanwhile; its violations wait a flush", ref)
            return False
        except Exception as e:
            logger.warning("cannot write the status of %s: %s", ref, e)
            return True  # a deleted policy or a permission problem: do not retry forever
        meta = stored.get("metadata") or {}
        self._remember(ref, stored.get("status") or {}, str(meta.get("resourceVersion") or ""))
        return True

    async def _write_events(self, pending: Sequence[_Pending]) -> None:
        for item in pending:
            if not item.involved:
                continue
            events = [(v.reason, v.message) for v in item.violations if v.mode != "enforce"]
            for reason, message in [*events, *item.notices]:
                try:
                    await self._sink.create_event(
                        item.namespace, self._event(item, reason, message)
                    )
                except Exception as e:
                    logger.warning("cannot create an Event for %s: %s", item.object_ref, e)

    def _event(self, item: _Pending, reason: str, message: str) -> dict[str, Any]:
        stamp = item.when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "kitpin-", "namespace": item.namespace},
            "involvedObject": {k: val for k, val in item.involved.items() if val},
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "type": "Warning",
            "source": {"component": "kitpin"},
            "reportingComponent": "kitpin.dev/kitpin",
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }


def _metric_label(ref: policy.PolicyRef) -> str:
    """``ClusterModelKitPolicy/name`` or ``ModelKitPolicy/namespace/name``: two namespaces'
    policies of the same name are two series."""
    if ref.namespace is None:
        return f"{ref.kind}/{ref.name}"
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


class ApiAuditSink:
    """:class:`AuditSink` over :class:`controller.kubeapi.KubeAPI`: a JSON merge patch of the
    ``status`` subresource of a kitpin.dev policy, and a POST of a core/v1 Event."""

    def __init__(self, api: kubeapi.KubeAPI[Any], *, timeout: float = WRITE_TIMEOUT) -> None:
        self._api = api
        self._timeout = timeout

    async def patch_policy_status(
        self, ref: policy.PolicyRef, status: Mapping[str, Any], resource_version: str | None
    ) -> Mapping[str, Any]:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self._api.patch(status_path(ref), body, timeout=self._timeout)
        except kubeapi.ConflictError as e:
            raise ConflictError(str(e)) from e

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        where = kubeapi.path("api", "v1", "namespaces", namespace, "events")
        await self._api.post(where, event, timeout=self._timeout)


def status_path(ref: policy.PolicyRef) -> str:
    """The API path of the ``status`` subresource of the policy ``ref``."""
    if ref.namespace is None:
        return kubeapi.path(
            "apis", policy.GROUP, policy.VERSION, "clustermodelkitpolicies", ref.name, "status"
        )
    return kubeapi.path(
        "apis", policy.GROUP, policy.VERSION, "namespaces", ref.namespace,
        "modelkitpolicies", ref.name, "status",
    )  # fmt: skip
