"""Leader election on a ``coordination.k8s.io/v1`` Lease: exactly one replica runs the drift
watch.

The algorithm is client-go's ``leaderelection`` (what kube-controller-manager and
kube-scheduler use), over :mod:`controller.kubeapi`:

- a replica **acquires** the Lease when it does not exist (create), when nobody holds it
  (``holderIdentity`` empty: the last leader released it), or when it has not changed for
  ``leaseDurationSeconds`` as measured by this replica's own monotonic clock since it last saw
  it change (no comparison of two machines' wall clocks);
- the leader **renews** it every ``retry`` seconds (``renewTime``); when it could not renew for
  ``renew_deadline`` seconds (below the duration) it stops its work first, so two replicas
  never watch at once (given clocks that run at about the same rate);
- every write carries the ``resourceVersion`` it read (optimistic concurrency): of two replicas
  taking an expired Lease at once, one gets 409 and stays a follower;
- on shutdown the leader **releases** it (empty holder, duration 1 s), so another replica takes
  over within one ``retry`` instead of a whole duration. A leader that dies without releasing
  is replaced within ``duration + 2 * retry`` (19 s by default; the issue asks for 30 s): a
  follower sees the last renewal up to one retry late and acquires up to one retry after it
  expired.

The holder identity is the pod name (``POD_NAME``, else the host name, which is the pod name
in Kubernetes) and a random suffix, so a restarted pod of the same name does not mistake the
old pod's Lease for its own.

Why a Lease and not kopf's peering: kopf's peering is not leader election. Operators of the
same priority all keep running (kopf only logs a warning), and a higher-priority peer pauses
every watch handler of the others, which would freeze the other replicas' indexes (policies,
namespaces, these records) that every replica needs to answer admissions. It also needs
kopf's own peering CRDs installed and cluster-wide write access to them. A Lease is the
Kubernetes primitive for exactly this: one small object, ``kubectl get lease`` shows who
leads, RBAC on one named object in kitpin's own namespace, and this package imports no kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from controller import kubeapi

__all__ = ["LeaseElector", "identity", "lease_path", "micro_time"]

logger = logging.getLogger(__name__)

CALL_TIMEOUT: Final = 5.0


def identity(pod_name: str | None = None) -> str:
    """``<pod>_<8 hex>``: the pod name (``POD_NAME``, else the host name) and a random suffix."""
    base = pod_name or os.environ.get("POD_NAME") or socket.gethostname() or "kitpin"
    return f"{base}_{secrets.token_hex(4)}"


def micro_time(when: datetime) -> str:
    """A ``metav1.MicroTime``: ``2026-01-02T03:04:05.000000Z`` (the apiserver needs the six
    digits in a Lease's ``acquireTime`` and ``renewTime``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str | None = None) -> str:
    parts = ["apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases"]
    return kubeapi.path(*parts, name) if name else kubeapi.path(*parts)


class LeaseElector:
    """Holds (or waits for) the Lease ``namespace/name``; :meth:`run` runs ``work`` while
    holding it."""

    def __init__(
        self,
        api: kubeapi.KubeAPI[Any],
        *,
        namespace: str,
        name: str,
        holder: str | None = None,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        if not retry < renew_deadline < duration:
            raise ValueError("need retry < renew_deadline < duration")
        self._api = api
        self._namespace = namespace
        self._name = name
        self.holder = holder or identity()
        self._duration = duration
        self._renew_deadline = renew_deadline
        self._retry = retry
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._timeout = min(timeout, renew_deadline / 2)
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._renewed_at: float | None = None
        """Monotonic time of our last successful acquire or renew; None: not leading."""

    @property
    def path(self) -> str:
        return lease_path(self._namespace, self._name)

    @property
    def leading(self) -> bool:
        """Whether this replica holds the Lease by its own reckoning (renewed within the
        renew deadline)."""
        return (
            self._renewed_at is not None and self._clock() - self._renewed_at < self._renew_deadline
        )

    # -- one step ------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards. Never raises for
        an apiserver problem (logged; False)."""
        try:
            held = await self._step()
        except kubeapi.KubeError as e:
            logger.warning("Lease %s/%s: %s", self._namespace, self._name, e)
            held = False
        if held:
            self._renewed_at = self._clock()
        return held

    async def _step(self) -> bool:
        try:
            lease = await self._api.get(self.path, timeout=self._timeout)
        except kubeapi.NotFoundError:
            return await self._create()
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        rv = str(meta.get("resourceVersion") or "") or None
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds")
        duration = float(duration) if isinstance(duration, int) and duration > 0 else self._duration
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"), duration)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        if holder and holder != self.holder and self._clock() < self._observed_at + duration:
            self._renewed_at = None
            return False  # somebody else's, and alive
        stamp = micro_time(self._now())
        transitions = spec.get("leaseTransitions")
        transitions = transitions if isinstance(transitions, int) else 0
        new_spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": int(self._duration),
            "renewTime": stamp,
        }
        if holder != self.holder:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = transitions + 1
        body: dict[str, Any] = {"spec": new_spec}
        if rv:
            body["metadata"] = {"resourceVersion": rv}
        try:
            stored = await self._api.patch(self.path, body, timeout=self._timeout)
        except kubeapi.ConflictError:
            return False  # somebody wrote first; look again next time
        if holder != self.holder:
            logger.info("acquired the Lease %s/%s as %s", self._namespace, self._name, self.holder)
        self._saw(stored)
        return True

    async def _create(self) -> bool:
        stamp = micro_time(self._now())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self._name,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/managed-by": "kitpin"},
            },
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": int(self._duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            stored = await self._api.post(lease_path(self._namespace), body, timeout=self._timeout)
        except kubeapi.ConflictError:
            return False  # AlreadyExists: another replica created it first
        logger.info("created the Lease %s/%s as %s", self._namespace, self._name, self.holder)
        self._saw(stored)
        return True

    def _saw(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        self._observed = (
            spec.get("holderIdentity") or "",
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
            float(duration) if isinstance(duration, int) and duration > 0 else self._duration,
        )
        self._observed_at = self._clock()
        self._resource_version = str((lease.get("metadata") or {}).get("resourceVersion") or "")

    async def release(self) -> bool:
        """Give the Lease up if this replica holds it (empty holder, 1 s duration); True when
        released. Best effort: a leader that cannot release is replaced after the duration."""
        if self._renewed_at is None:
            return False
        self._renewed_at = None
        stamp = micro_time(self._now())
        body: dict[str, Any] = {
            "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": stamp}
        }
        if self._resource_version:
            body["metadata"] = {"resourceVersion": self._resource_version}
        try:
            await self._api.patch(self.path, body, timeout=self._timeout)
        except kubeapi.KubeError as e:
            logger.info("could not release the Lease %s/%s: %s", self._namespace, self._name, e)
            return False
        logger.info("released the Lease %s/%s", self._namespace, self._name)
        return True

    # -- the loop ------------------------------------------------------------------------

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Forever: wait for the Lease, run ``work`` while holding it, stop it when the Lease
        is lost (and wait for the Lease again). Cancelled (shutdown): stop ``work``, release."""
        try:
            while True:
                while not await self.try_acquire_or_renew():
                    await self._sleep(self._retry)
                await self._lead(work)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release())

    async def _lead(self, work: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.ensure_future(work())
        try:
            while True:
                await self._sleep(self._retry)
                if task.done():
                    if not task.cancelled() and task.exception() is not None:
                        logger.error("the work under the Lease failed", exc_info=task.exception())
                    task = asyncio.ensure_future(work())  # keep leading, start it again
                if not await self.try_acquire_or_renew() and not self.leading:
                    logger.warning(
                        "lost the Lease %s/%s (no renewal for %gs): stopping",
                        self._namespace,
                        self._name,
                        self._renew_deadline,
                    )
                    return
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
