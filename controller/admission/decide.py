"""From a review to a decision, the same for both paths (the fast path and kopf's handlers):
the engine's :class:`~controller.admission.pinning.Decision`, the admission metrics and the
audit trail. No kopf here."""

from __future__ import annotations

import time

from controller import audit, sites
from controller import metrics as metrics_mod
from controller.admission import pinning

__all__ = ["Admission"]


def _record(
    recorder: audit.AuditRecorder | None, review: pinning.Review, decision: pinning.Decision
) -> None:
    """Audit trail, once per object: not for dry runs, and not for objects made by a
    controller (their owner's violations were recorded when the owner was admitted)."""
    if recorder is None or review.dry_run or not decision.violations:
        return
    if sites.controller_owner(review.obj) is not None:
        return
    recorder.record(decision.violations, obj=review.obj, namespace=review.namespace)


class Admission:
    """What kitpin's handlers do with a review, shared by the kopf handlers and the fast path:
    the engine's decision, the admission metrics and the audit trail."""

    def __init__(
        self,
        engine: pinning.Engine,
        *,
        metrics: metrics_mod.Metrics,
        recorder: audit.AuditRecorder | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.recorder = recorder

    async def mutate(self, review: pinning.Review) -> pinning.Decision:
        started = time.perf_counter()
        decision = await self.engine.mutate(review)
        self.metrics.observe_admission("mutate", decision.reason, time.perf_counter() - started)
        if decision.denial is not None:
            _record(self.recorder, review, decision)  # a policy denial is final here
        return decision

    async def validate(self, review: pinning.Review) -> pinning.Decision:
        started = time.perf_counter()
        decision = await self.engine.validate(review)
        self.metrics.observe_admission("validate", decision.reason, time.perf_counter() - started)
        _record(self.recorder, review, decision)
        return decision
