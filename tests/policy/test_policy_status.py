"""Status builders: Ready condition, observedGeneration, counters, recent violations."""

from __future__ import annotations

from datetime import timedelta

from policy_fakes import NOW, cluster, evaluate, evidence

from controller import errors, policy

LATER = NOW + timedelta(minutes=5)


def test_accepted_status() -> None:
    p = cluster("prod", {"mode": "warn", "tags": {"denied": ["latest"]}}, generation=3)
    status = policy.accepted_status(p, now=NOW)
    assert status == {
        "observedGeneration": 3,
        "ruleCount": 1,
        "summary": "tags: deny latest",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Accepted",
                "message": "in force in mode warn: tags: deny latest",
                "lastTransitionTime": "2026-11-26T12:00:00Z",
                "observedGeneration": 3,
            }
        ],
    }


def test_transition_time_moves_only_when_status_changes() -> None:
    p = cluster("prod", {"tags": {"denied": ["latest"]}}, generation=1)
    first = policy.accepted_status(p, now=NOW)
    again = policy.accepted_status(p, now=LATER, previous=first)
    assert again["conditions"][0]["lastTransitionTime"] == "2026-11-26T12:00:00Z"
    bad = policy.rejected_status(
        errors.ConfigError("spec.mode: bad"), generation=2, now=LATER, previous=again
    )
    (cond,) = bad["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False",
        "Invalid",
        "spec.mode: bad",
    )
    assert cond["lastTransitionTime"] == "2026-11-26T12:05:00Z"
    assert bad["ruleCount"] == 0 and bad["observedGeneration"] == 2


def test_other_conditions_are_kept() -> None:
    p = cluster("prod", {"parents": {}})
    previous = {"conditions": [{"type": "Other", "status": "True"}, "junk"]}
    status = policy.accepted_status(p, now=NOW, previous=previous)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Other"]
    assert "observedGeneration" not in status["conditions"][0]


def test_record_violations_counts_and_keeps_the_latest() -> None:
    p = cluster("prod", {"tags": {"denied": ["latest"], "requireDigest": True}})
    verdict = evaluate([p], evidence("r.io/m:latest"))
    violations = verdict.by_policy()[p.ref]
    status = policy.record_violations(
        None, violations, object_ref="Deployment/web", namespace="ml", now=NOW
    )
    assert status["violations"] == 2
    assert status["violationsByRule"] == {"tags.denied": 1, "tags.requireDigest": 1}
    assert status["recentViolations"][0] == {
        "object": "Deployment/web",
        "namespace": "ml",
        "rule": "tags.denied",
        "mode": "enforce",
        "reference": "r.io/m:latest",
        "time": "2026-11-26T12:00:00Z",
    }
    for i in range(10):
        status = policy.record_violations(
            status, violations[:1], object_ref=f"Pod/p{i}", namespace="ml", now=LATER
        )
    assert status["violations"] == 12
    assert status["violationsByRule"] == {"tags.denied": 11, "tags.requireDigest": 1}
    assert len(status["recentViolations"]) == policy.RECENT_VIOLATIONS_KEPT
    assert status["recentViolations"][0]["object"] == "Pod/p9"


def test_record_violations_tolerates_a_damaged_status() -> None:
    p = cluster("prod", {"tags": {"denied": ["latest"]}})
    (v,) = evaluate([p], evidence("r.io/m")).violations
    damaged = {"violations": "many", "violationsByRule": {"x": "y", "tags.denied": 2}}
    status = policy.record_violations(damaged, [v], object_ref="Pod/a", namespace="ml", now=NOW)
    assert status["violations"] == 1
    assert status["violationsByRule"] == {"tags.denied": 3}


def test_record_violations_counts_every_mode() -> None:
    """status.violations counts enforce denials as well as warn and audit admissions (the
    CRD's "Violations counted (all modes)", and the README); each entry names its mode."""
    p = cluster(
        "prod",
        {
            "mode": "audit",
            "repositories": {"mode": "warn", "denied": ["r.io/**"]},
            "tags": {"mode": "enforce", "denied": ["latest"]},
        },
    )
    audit = cluster("count", {"mode": "audit", "tags": {"requireDigest": True}})
    verdict = evaluate([p, audit], evidence("r.io/m:latest"))
    assert verdict.outcome == "deny"
    statuses = {
        ref: policy.record_violations(None, vs, object_ref="Pod/a", namespace="ml", now=NOW)
        for ref, vs in verdict.by_policy().items()
    }
    assert statuses[p.ref]["violations"] == 2
    assert [e["mode"] for e in statuses[p.ref]["recentViolations"]] == ["warn", "enforce"]
    assert statuses[audit.ref]["violations"] == 1
    assert statuses[audit.ref]["recentViolations"][0]["mode"] == "audit"
