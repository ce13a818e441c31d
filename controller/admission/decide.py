"""From a review to a decision, the same for both paths (the fast path and kopf's handlers):
the engine's :class:`~controller.admission.pinning.Decision`, the admission metrics and the
audit trail. No kopf here.

The audit trail (:class:`controller.audit.AuditRecorder`) gets, once per object (never for a
dry run, nor for an object a controller made: its owner was recorded when it was admitted):

- the policy violations of the decision (status counters, metrics, a Warning Event for each
  warn/audit one);
- with ``failure: warn``, a Warning Event when the validating webhook admits an object that
  is not what kitpin promises: ``AdmittedUnpinned`` (the mutating webhook could not pin a
  reference: the object carries ``kitpin.dev/unpinned``) or ``AdmittedUnverified`` (the
  registry could not confirm a reference during validation). The same path and Event shape
  as policy warnings, so ``kubectl describe`` and ``kubectl get events`` show both alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from controller import audit, jsonlimits, sites
from controller import metrics as metrics_mod
from controller.admission import pinning, pins

__all__ = ["Admission"]


def _audited(recorder: audit.AuditRecorder | None, review: pinning.Review) -> bool:
    """Whether this review goes into the audit trail: not for dry runs, and not for objects
    made by a controller (their owner's findings were recorded when the owner was admitted)."""
    if recorder is None or review.dry_run:
        return False
    return sites.controller_owner(review.obj) is None


def _record(
    recorder: audit.AuditRecorder | None, review: pinning.Review, decision: pinning.Decision
) -> None:
    """The decision's policy violations, once per object."""
    if recorder is None or not decision.violations or not _audited(recorder, review):
        return
    recorder.record(decision.violations, obj=review.obj, namespace=review.namespace)


def unpinned_sites(obj: Mapping[str, Any]) -> dict[str, Mapping[str, str]]:
    """The ``kitpin.dev/unpinned`` records of ``obj`` (``{"from", "reason"}`` by JSON
    pointer) whose site still holds the value the record names: kitpin admitted that value
    unpinned. A record whose site changed since (or never held it) is stale or forged and
    left out."""
    text = pins.annotations_of(obj).get(pins.UNPINNED_ANNOTATION)
    if not isinstance(text, str):
        return {}
    try:
        data = jsonlimits.loads(text)  # bounded: annotations are user-writable
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, Mapping[str, str]] = {}
    for pointer, record in data.items():
        if not isinstance(pointer, str) or not isinstance(record, dict):
            continue
        original, reason = record.get("from"), record.get("reason")
        if not isinstance(original, str) or not isinstance(reason, str):
            continue
        try:
            holds = sites.get(obj, pointer) == original
        except LookupError:  # no such site (any more)
            continue
        if holds:
            found[pointer] = {"from": original, "reason": reason}
    return found


def failure_notices(
    review: pinning.Review, decision: pinning.Decision, settings: sites.SitesSettings
) -> list[tuple[str, str]]:
    """The ``(reason, message)`` of the Warning Events an admitted object gets under
    ``failure: warn`` (see the module docstring): one ``AdmittedUnpinned`` naming every site
    admitted unpinned, one ``AdmittedUnverified`` naming every other reference validation
    could not verify."""
    if decision.denial is not None:
        return []
    notices: list[tuple[str, str]] = []
    unpinned = unpinned_sites(review.obj)
    if unpinned:
        where = {s.path: s.where for s in sites.find(review.obj, settings).sites}
        parts = [
            f"{where.get(pointer, pointer)}: '{r['from']}': {r['reason']}"
            for pointer, r in unpinned.items()
        ]
        notices.append(
            (
                pinning.Reason.ADMITTED_UNPINNED,
                "kitpin admitted this object unpinned (failure mode warn), so it runs "
                "whatever the tag points to: " + "; ".join(parts) + f" (annotation "
                f"{pins.UNPINNED_ANNOTATION}); apply it again when the registry answers to "
                "pin it",
            )
        )
    values = {f"'{r['from']}'" for r in unpinned.values()}
    unverified = [
        w.removeprefix(pinning.UNVERIFIED_WARNING)
        for w in decision.warnings
        if w.startswith(pinning.UNVERIFIED_WARNING)
    ]
    unverified = [m for m in unverified if not any(v in m for v in values)]  # said above
    if unverified:
        notices.append(
            (
                pinning.Reason.ADMITTED_UNVERIFIED,
                "kitpin admitted this object without verifying it (failure mode warn): "
                + "; ".join(unverified),
            )
        )
    return notices


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
        # The object as admitted (validation sees the final object, with its uid): what
        # failure mode warn let through unpinned or unverified (almost always nothing).
        if self.recorder is not None:
            notices = failure_notices(review, decision, self.engine.settings.sites)
            if notices and _audited(self.recorder, review):
                for reason, message in notices:
                    self.recorder.notice(
                        obj=review.obj, namespace=review.namespace, reason=reason, message=message
                    )
        return decision
