"""``decide.Admission``: one reason code per outcome (the denial's text names the reason the
metrics count), and the audit trail: policy warnings and ``failure: warn`` admissions reach
the same Warning Events, once per object, never for dry runs or controller-made objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from controller import audit, errors, metrics, policy
from controller.admission import decide, pinning
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    FakeResolver,
    cluster_policy,
    load,
    with_values,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WHERE = 'initContainer "kitops-init" env MODELKIT_REF'


class MemorySink:
    """An :class:`audit.AuditSink` that keeps what would be written."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.statuses: list[tuple[policy.PolicyRef, Mapping[str, Any]]] = []

    async def patch_policy_status(
        self, ref: policy.PolicyRef, status: Mapping[str, Any], resource_version: str | None
    ) -> Mapping[str, Any]:
        self.statuses.append((ref, status))
        return {"status": status, "metadata": {"resourceVersion": str(len(self.statuses))}}

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self.events.append(event)


def admission(
    resolver: FakeResolver, sink: MemorySink | None = None, **settings: Any
) -> decide.Admission:
    recorder = audit.AuditRecorder(sink, now=lambda: NOW) if sink is not None else None
    return decide.Admission(
        pinning.Engine(resolver, settings=pinning.AdmissionSettings(**settings)),
        metrics=metrics.Metrics(),
        recorder=recorder,
    )


def review(obj: Mapping[str, Any], **kw: Any) -> pinning.Review:
    return pinning.Review(operation="CREATE", namespace="ml", obj=obj, **kw)


def deployment(value: str | None = None) -> dict[str, Any]:
    obj = load(DEPLOYMENT)
    obj["metadata"]["uid"] = "uid-llama"  # validation sees the uid the apiserver gave
    if value is not None:
        obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = value
    return obj


def outcomes(a: decide.Admission, webhook: str, reason: str) -> float:
    return a.metrics.value(
        "kitpin_admission_reviews_total", {"webhook": webhook, "outcome": reason}
    )


async def admit(a: decide.Admission, obj: Mapping[str, Any], **kw: Any) -> pinning.Decision:
    """Mutate, then validate the object the mutation produced, as the apiserver does."""
    mutated = await a.mutate(review(obj, **kw))
    assert mutated.allowed, mutated
    return await a.validate(review(with_values(obj, mutated), **kw))


# -- one reason code per outcome ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("myorg/llama:production", "LocalReference"),
        ("reg.example.com/Llama:production", "InvalidReference"),
        ("reg.example.com/image:v1", "NotAModelKit"),
        ("reg.example.com/missing:v1", "NotFound"),
        ("reg.example.com/down:v1", "Unreachable"),
    ],
)
async def test_a_validation_denial_names_the_reason_the_metrics_count(
    value: str, reason: str
) -> None:
    resolver = FakeResolver()
    resolver.formats["reg.example.com/image"] = "other"
    resolver.failures["reg.example.com/missing"] = errors.NotFoundError("no such tag")
    resolver.failures["reg.example.com/down"] = errors.UnreachableError("connection refused")
    a = admission(resolver)

    decision = await a.validate(review(deployment(value)))

    assert decision.denial is not None
    assert decision.reason == decision.denial.reason == reason
    assert f"{WHERE}: " in decision.denial.message
    assert f": {reason}: " in decision.denial.message
    assert outcomes(a, "validate", reason) == 1


async def test_a_mutation_denial_names_the_reason_the_metrics_count() -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.ForbiddenError("denied: no pull access")
    a = admission(resolver)

    decision = await a.mutate(review(deployment()))

    assert decision.denial is not None and decision.reason == "Forbidden"
    assert f"{WHERE}: cannot pin '{CANONICAL}': Forbidden: " in decision.denial.message
    assert outcomes(a, "mutate", "Forbidden") == 1


async def test_a_policy_denial_names_policy_denied() -> None:
    a = admission(FakeResolver())
    no_production = cluster_policy("no-prod", {"tags": {"denied": ["production"]}})

    decision = await a.mutate(review(deployment(), policies=[no_production]))

    assert decision.denial is not None and decision.reason == policy.Reason.DENIED
    assert decision.denial.message.startswith(
        "denied by ModelKit policy (PolicyDenied): ClusterModelKitPolicy/no-prod rule tags.denied: "
    )
    assert outcomes(a, "mutate", "PolicyDenied") == 1


async def test_validation_of_valid_references_is_verified_not_no_references() -> None:
    a = admission(FakeResolver())
    await admit(a, deployment())
    assert outcomes(a, "validate", pinning.Reason.VERIFIED) == 1
    assert outcomes(a, "validate", pinning.Reason.NOTHING_TO_DO) == 0

    with_policy = admission(FakeResolver())
    loose = cluster_policy("loose", {"tags": {"denied": ["dev"]}})
    await admit(with_policy, deployment(), policies=[loose])
    assert outcomes(with_policy, "validate", policy.Reason.ALLOWED) == 1


# -- failure: warn emits Events like policy warnings ---------------------------------------


async def test_failure_warn_admission_emits_one_admitted_unpinned_event() -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.UnreachableError("connection refused")
    sink = MemorySink()
    a = admission(resolver, sink, failure="warn")

    decision = await admit(a, deployment())
    assert a.recorder is not None
    await a.recorder.flush()

    assert decision.allowed and decision.reason == pinning.Reason.ADMITTED_UNVERIFIED
    assert outcomes(a, "mutate", pinning.Reason.ADMITTED_UNPINNED) == 1
    assert outcomes(a, "validate", pinning.Reason.ADMITTED_UNVERIFIED) == 1
    (event,) = sink.events  # the same site failed twice: one Event, not two
    assert event["reason"] == "AdmittedUnpinned"
    assert event["type"] == "Warning"
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama",
        "namespace": "ml",
        "uid": "uid-llama",
    }
    assert event["message"] == (
        "kitpin admitted this object unpinned (failure mode warn), so it runs whatever the "
        f"tag points to: {WHERE}: '{CANONICAL}': Unreachable (annotation kitpin.dev/unpinned); "
        "apply it again when the registry answers to pin it"
    )
    assert sink.statuses == []  # not a policy violation: no policy status changes


async def test_failure_warn_events_are_shaped_like_policy_warning_events() -> None:
    warn = cluster_policy("rollout", {"mode": "warn", "tags": {"denied": ["production"]}})
    resolver = FakeResolver()
    sink = MemorySink()
    warned = admission(resolver, sink)
    await admit(warned, deployment(), policies=[warn])

    failing = FakeResolver()
    failing.failures["reg.example.com/llama"] = errors.RegistryTimeoutError("no answer in 8s")
    failed = admission(failing, sink, failure="warn")
    await admit(failed, deployment())
    for a in (warned, failed):
        assert a.recorder is not None
        await a.recorder.flush()

    policy_event, failure_event = sink.events
    assert (policy_event["reason"], failure_event["reason"]) == ("TagDenied", "AdmittedUnpinned")
    assert set(policy_event) == set(failure_event)
    same = ("apiVersion", "kind", "metadata", "involvedObject", "type", "source")
    assert {k: policy_event[k] for k in same} == {k: failure_event[k] for k in same}


async def test_validation_that_cannot_verify_emits_admitted_unverified() -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.UnreachableError("connection refused")
    sink = MemorySink()
    a = admission(resolver, sink, failure="warn", mode="validate-only")

    decision = await admit(a, deployment())
    assert a.recorder is not None
    await a.recorder.flush()

    assert decision.reason == pinning.Reason.ADMITTED_UNVERIFIED
    assert any(w.startswith(pinning.UNVERIFIED_WARNING) for w in decision.warnings)
    (event,) = sink.events
    assert event["reason"] == "AdmittedUnverified"
    assert event["message"] == (
        "kitpin admitted this object without verifying it (failure mode warn): "
        f"{WHERE}: cannot check '{CANONICAL}': Unreachable: connection refused"
    )


@pytest.mark.parametrize("case", ["dry-run", "controller-owned", "failure-deny", "no-recorder"])
async def test_no_failure_event(case: str) -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.UnreachableError("connection refused")
    sink = MemorySink()
    a = admission(
        resolver,
        None if case == "no-recorder" else sink,
        failure="deny" if case == "failure-deny" else "warn",
    )
    obj = deployment()
    if case == "controller-owned":
        obj["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u", "controller": True}
        ]
    unpinned = {ENV_PATH: {"from": CANONICAL, "reason": "Unreachable"}}
    obj["metadata"]["annotations"] = {pinning.UNPINNED_ANNOTATION: json.dumps(unpinned)}

    await a.validate(review(obj, dry_run=case == "dry-run"))
    if a.recorder is not None:
        await a.recorder.flush()

    assert sink.events == []


async def test_a_stale_or_forged_unpinned_record_is_not_believed() -> None:
    obj = deployment(f"{CANONICAL}@sha256:{'b' * 64}")  # pinned since
    records = {
        ENV_PATH: {"from": CANONICAL, "reason": "Unreachable"},
        "/spec/nowhere": {"from": "x", "reason": "NotFound"},
    }
    obj["metadata"]["annotations"] = {pinning.UNPINNED_ANNOTATION: json.dumps(records)}
    assert decide.unpinned_sites(obj) == {}

    for text in ("{not json", "[]", json.dumps({ENV_PATH: "x"}), json.dumps({ENV_PATH: {}})):
        obj["metadata"]["annotations"] = {pinning.UNPINNED_ANNOTATION: text}
        assert decide.unpinned_sites(obj) == {}


async def test_policy_violations_and_failures_together_one_event_each() -> None:
    """A warn violation and an unpinned site in one object: both Events, the status counts
    only the violation."""
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.UnreachableError("connection refused")
    warn = cluster_policy("rollout", {"mode": "warn", "tags": {"denied": ["production"]}})
    sink = MemorySink()
    a = admission(resolver, sink, failure="warn")

    await admit(a, deployment(), policies=[warn])
    assert a.recorder is not None
    await a.recorder.flush()

    assert sorted(e["reason"] for e in sink.events) == ["AdmittedUnpinned", "TagDenied"]
    ((ref, status),) = sink.statuses
    assert ref == warn.ref and status["violations"] == 1
