"""The ``status`` of policy objects: :func:`accepted_status` and :func:`rejected_status` (the
Ready condition, ``ruleCount``, ``summary``) and :func:`record_violations` (the violation
counters and ``recentViolations``). Each returns the fields to merge; pure (callers pass
``now``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from controller import errors, types
from controller.policy.model import READY, RECENT_VIOLATIONS_KEPT, Policy, Reason, Violation


def _ready_condition(
    previous: Mapping[str, Any] | None,
    *,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """``status.conditions`` with the Ready condition set; ``lastTransitionTime`` moves only
    when the condition's status changes. Other condition types are kept."""
    conditions = []
    transition = types.rfc3339(now)
    for cond in (previous or {}).get("conditions") or []:
        if not isinstance(cond, Mapping):
            continue
        if cond.get("type") == READY:
            if cond.get("status") == status and isinstance(cond.get("lastTransitionTime"), str):
                transition = cond["lastTransitionTime"]
            continue
        conditions.append(dict(cond))
    ready: dict[str, Any] = {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        ready["observedGeneration"] = generation
    return [ready, *conditions]


def accepted_status(
    policy: Policy, *, now: datetime, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``status`` fields to merge when ``policy`` was parsed and is in force: Ready=True,
    ``observedGeneration``, ``ruleCount``, ``summary``. Counters are left alone."""
    return {
        "observedGeneration": policy.generation,
        "ruleCount": len(policy.rules),
        "summary": policy.summary,
        "conditions": _ready_condition(
            previous,
            status="True",
            reason=Reason.ACCEPTED,
            message=f"in force in mode {policy.mode}: {policy.summary}",
            generation=policy.generation,
            now=now,
        ),
    }


def rejected_status(
    error: errors.ConfigError | str,
    *,
    generation: int | None,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``status`` fields to merge when a stored policy does not parse (it got past the
    webhook, e.g. while kitpin was down): Ready=False with the parse error; it is not in
    force and the index must not contain it."""
    return {
        "observedGeneration": generation,
        "ruleCount": 0,
        "summary": "invalid: not in force",
        "conditions": _ready_condition(
            previous,
            status="False",
            reason=Reason.INVALID,
            message=str(error),
            generation=generation,
            now=now,
        ),
    }


def record_violations(
    previous: Mapping[str, Any] | None,
    violations: Sequence[Violation],
    *,
    object_ref: str,
    namespace: str,
    now: datetime,
    keep: int = RECENT_VIOLATIONS_KEPT,
) -> dict[str, Any]:
    """The ``status`` fields to merge after one object violated one policy: ``violations``
    (total) and ``violationsByRule`` incremented, ``recentViolations`` with the new entries
    first, trimmed to ``keep``. ``object_ref`` is ``Kind/name`` of the offending object.
    Pass the violations of ONE policy (:meth:`Verdict.by_policy`).

    Every violation counts, whatever its mode: ``enforce`` denials as well as ``warn`` and
    ``audit`` admissions (the CRD documents ``status.violations`` as "Violations counted
    (all modes)", and so does the README); each ``recentViolations`` entry carries its
    ``mode``. One violation is one rule broken by one reference (a license declared in two
    places of one Kitfile counts once)."""
    previous = previous or {}
    total = previous.get("violations")
    by_rule_prev = previous.get("violationsByRule")
    by_rule: dict[str, int] = {
        k: v for k, v in (by_rule_prev or {}).items() if isinstance(k, str) and types.is_int(v)
    }
    for v in violations:
        by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
    stamp = types.rfc3339(now)
    recent = [
        {
            "object": object_ref,
            "namespace": namespace,
            "rule": v.rule,
            "mode": v.mode,
            "reference": v.reference[:512],
            "time": stamp,
        }
        for v in violations
    ]
    old = previous.get("recentViolations")
    if isinstance(old, list):
        recent.extend(dict(e) for e in old if isinstance(e, Mapping))
    return {
        "violations": (total if types.is_int(total) else 0) + len(violations),
        "violationsByRule": by_rule,
        "recentViolations": recent[:keep],
    }
