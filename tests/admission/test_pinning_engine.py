"""The admission engine's rules, with a fake resolver at the Resolver seam (pinning_fakes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from controller import errors
from controller.admission import pinning
from controller.types import Credential
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    FakeResolver,
    RecordingCredentials,
    load,
    with_values,
)


def engine(resolver: FakeResolver, **settings: Any) -> pinning.Engine:
    return pinning.Engine(resolver, settings=pinning.AdmissionSettings(**settings))


def review(obj: Mapping[str, Any], *, operation: str = "CREATE", **kw: Any) -> pinning.Review:
    return pinning.Review(operation=operation, namespace="ml", obj=obj, **kw)


async def test_create_pins_the_tag_keeps_it_and_records_the_annotation() -> None:
    resolver = FakeResolver()
    decision = await engine(resolver).mutate(review(load(DEPLOYMENT)))

    digest = resolver.digest(CANONICAL)
    assert decision.allowed and decision.reason == pinning.Reason.PINNED
    assert decision.values == {ENV_PATH: f"reg.example.com/llama:production@{digest}"}
    record = json.loads(str(decision.annotations[pinning.PINNED_ANNOTATION]))
    assert record == {
        ENV_PATH: {
            "from": "reg.example.com/llama:production",
            "digest": digest,
            "resolvedAt": "2026-11-26T12:00:00Z",
        }
    }


async def test_a_reference_that_already_has_a_digest_is_left_alone() -> None:
    resolver = FakeResolver()
    obj = load(DEPLOYMENT)
    digest = "sha256:" + "a" * 64
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"reg.example.com/llama:production@{digest}"
    )
    decision = await engine(resolver).mutate(review(obj))
    assert decision.values == {} and decision.annotations == {}
    assert resolver.calls == []


async def test_owned_replicaset_template_is_never_mutated() -> None:
    resolver = FakeResolver()
    obj = load(DEPLOYMENT)
    obj["kind"] = "ReplicaSet"
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama", "uid": "u1",
         "controller": True}
    ]  # fmt: skip
    decision = await engine(resolver).mutate(review(obj))
    assert decision.reason == pinning.Reason.OWNED
    assert not decision.changes and resolver.calls == []


async def test_pods_are_pinned_even_when_owned() -> None:
    resolver = FakeResolver()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "llama-abc",
            "namespace": "ml",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-1", "uid": "u",
                 "controller": True}
            ],
        },
        "spec": load(DEPLOYMENT)["spec"]["template"]["spec"],
    }  # fmt: skip
    decision = await engine(resolver).mutate(review(pod))
    assert decision.values == {
        "/spec/initContainers/0/env/1/value": f"{CANONICAL}@{resolver.digest(CANONICAL)}"
    }


async def test_update_with_unchanged_reference_keeps_the_old_digest_after_the_tag_moved() -> None:
    resolver = FakeResolver()
    eng = engine(resolver)
    created = with_values(load(DEPLOYMENT), await eng.mutate(review(load(DEPLOYMENT))))
    old_digest = resolver.digest(CANONICAL)

    resolver.move(CANONICAL)  # the tag moves in the registry
    calls = len(resolver.calls)
    reapplied = load(DEPLOYMENT)  # GitOps re-applies the tag-only manifest
    reapplied["metadata"]["annotations"] = created["metadata"]["annotations"]
    decision = await eng.mutate(review(reapplied, operation="UPDATE", old=created))

    assert decision.values == {ENV_PATH: f"{CANONICAL}@{old_digest}"}
    assert decision.annotations == {}  # the record (with its resolvedAt) is unchanged
    assert len(resolver.calls) == calls  # nothing was resolved


async def test_update_with_a_changed_tag_resolves_anew() -> None:
    resolver = FakeResolver()
    eng = engine(resolver)
    created = with_values(load(DEPLOYMENT), await eng.mutate(review(load(DEPLOYMENT))))
    changed = load(DEPLOYMENT)
    changed["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        "reg.example.com/llama:challenger"
    )
    decision = await eng.mutate(review(changed, operation="UPDATE", old=created))
    new = "reg.example.com/llama:challenger"
    assert decision.values == {ENV_PATH: f"{new}@{resolver.digest(new)}"}
    record = json.loads(str(decision.annotations[pinning.PINNED_ANNOTATION]))
    assert record[ENV_PATH]["from"] == new


async def test_resolution_failure_denies_with_the_real_cause_by_default() -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.RateLimitedError(
        "reg.example.com answered 429 Too Many Requests; retry after 30 s", retry_after=30
    )
    decision = await engine(resolver).mutate(review(load(DEPLOYMENT)))
    assert decision.denial is not None
    assert decision.denial.reason == "RateLimited"
    assert "kitops-init" in decision.denial.message
    assert "429" in decision.denial.message
    assert "reg.example.com/llama:production" in decision.denial.message


async def test_failure_mode_warn_admits_unpinned_with_warning_and_annotation() -> None:
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.NotFoundError("no such tag")
    decision = await engine(resolver, failure="warn").mutate(review(load(DEPLOYMENT)))
    assert decision.allowed and decision.values == {}
    assert decision.reason == pinning.Reason.ADMITTED_UNPINNED  # not "Pinned" in the metrics
    assert any("admitted unpinned" in w and "no such tag" in w for w in decision.warnings)
    unpinned = json.loads(str(decision.annotations[pinning.UNPINNED_ANNOTATION]))
    assert unpinned == {
        ENV_PATH: {"from": "reg.example.com/llama:production", "reason": "NotFound"}
    }


async def test_stale_resolution_is_pinned_with_a_warning() -> None:
    resolver = FakeResolver()
    resolver.stale.add("reg.example.com/llama")
    decision = await engine(resolver).mutate(review(load(DEPLOYMENT)))
    assert decision.values
    assert any("could not be reached" in w for w in decision.warnings)


async def test_pods_only_mode_leaves_workloads_and_pins_pods() -> None:
    resolver = FakeResolver()
    eng = engine(resolver, mode="pods-only")
    assert (await eng.mutate(review(load(DEPLOYMENT)))).reason == pinning.Reason.PODS_ONLY
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
           "spec": load(DEPLOYMENT)["spec"]["template"]["spec"]}  # fmt: skip
    assert (await eng.mutate(review(pod))).values


async def test_validate_only_mode_never_mutates() -> None:
    resolver = FakeResolver()
    decision = await engine(resolver, mode="validate-only").mutate(review(load(DEPLOYMENT)))
    assert decision.reason == pinning.Reason.VALIDATE_ONLY and not decision.changes


@pytest.mark.parametrize("ignored", [True, False])
async def test_ignored_namespaces_are_skipped(ignored: bool) -> None:
    resolver = FakeResolver()
    eng = engine(resolver)
    if ignored:
        rv = review(load(DEPLOYMENT), namespace_ignored=True)
    else:
        rv = pinning.Review(operation="CREATE", namespace="kube-system", obj=load(DEPLOYMENT))
    decision = await eng.mutate(rv)
    assert decision.reason == pinning.Reason.IGNORED_NAMESPACE and resolver.calls == []
    assert (await eng.validate(rv)).allowed


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("myorg/llama:production", ["no registry host", "local storage"]),
        ("reg.example.com/llama@sha256:1234", ["sha256"]),
        ("reg.example.com/Llama:production", ["lowercase"]),
    ],
)
async def test_validation_denies_references_that_can_never_work(
    value: str, words: list[str]
) -> None:
    obj = load(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = value
    resolver = FakeResolver()
    eng = engine(resolver)
    mutated = await eng.mutate(review(obj))
    assert mutated.allowed and not mutated.values  # left for the validating webhook
    decision = await eng.validate(review(obj))
    reason = "LocalReference" if value.startswith("myorg/") else "InvalidReference"
    assert decision.denial is not None and decision.denial.reason == reason
    assert f": {reason}: " in decision.denial.message  # named alike in text and metrics
    assert "kitops-init" in decision.denial.message
    for word in words:
        assert word in decision.denial.message


async def test_validation_denies_a_container_image_where_a_modelkit_is_expected() -> None:
    resolver = FakeResolver()
    resolver.formats["reg.example.com/llama"] = "other"
    decision = await engine(resolver).validate(review(load(DEPLOYMENT)))
    assert decision.denial is not None and decision.denial.reason == "NotAModelKit"
    assert "expects a KitOps ModelKit" in decision.denial.message


async def test_image_volumes_may_hold_any_artifact() -> None:
    resolver = FakeResolver()
    resolver.formats["reg.example.com/data"] = "other"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "m", "image": {"reference": "reg.example.com/data:v1"}}],
        },
    }
    eng = engine(resolver)
    decision = await eng.mutate(review(pod))
    assert decision.values == {
        "/spec/volumes/0/image/reference": "reg.example.com/data:v1@"
        + resolver.digest("reg.example.com/data:v1")
    }
    assert (await eng.validate(review(pod))).allowed


async def test_credentials_are_looked_up_per_registry_in_the_object_namespace() -> None:
    resolver = FakeResolver()
    cred = Credential(username="u", password="p", source="secret ml/regcred")
    creds = RecordingCredentials(cred)
    eng = pinning.Engine(resolver, credentials=creds)
    await eng.mutate(review(load(DEPLOYMENT)))
    assert creds.calls == [("ml", "reg.example.com/llama", True)]
    assert resolver.calls == [(CANONICAL, cred)]
