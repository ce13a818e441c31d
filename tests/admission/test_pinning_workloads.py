"""The engine on custom resources with pod templates (the shipped defaults, docs/sites.md):
pinned at the owner, children with a controller owner left alone, Pods always pinned,
pods-only; and the warning for an image volume that names a KitOps-format ModelKit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller import artifacts, errors, sites
from controller.admission import pinning
from controller.types import Manifest
from tests.admission.pinning_fakes import FakeResolver, RecordingCredentials

REF = "reg.example.com/llama:production"
INIT = [{"name": "kitops-init", "image": "ghcr.io/kitops-ml/kitops-init:v1.7.0",
         "env": [{"name": "MODELKIT_REF", "value": REF}]}]  # fmt: skip
ENV = "/initContainers/0/env/0/value"


def engine(resolver: FakeResolver, **settings: Any) -> pinning.Engine:
    return pinning.Engine(resolver, settings=pinning.AdmissionSettings(**settings))


def review(obj: Mapping[str, Any], **kw: Any) -> pinning.Review:
    return pinning.Review(operation="CREATE", namespace="ml", obj=obj, **kw)


def owned_by(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    obj.setdefault("metadata", {})["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": "owner", "uid": "u1", "controller": True}
    ]
    return obj


def lws() -> dict[str, Any]:
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "vllm", "namespace": "ml"},
        "spec": {
            "leaderWorkerTemplate": {
                "size": 2,
                "leaderTemplate": {"spec": {"initContainers": INIT, "containers": []}},
                "workerTemplate": {"spec": {"initContainers": INIT, "containers": []}},
            }
        },
    }


def statefulset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "vllm-0", "namespace": "ml"},
        "spec": {"template": {"spec": {"initContainers": INIT, "containers": []}}},
    }


def raycluster() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "serve-raycluster-x", "namespace": "ml"},
        "spec": {"headGroupSpec": {"template": {"spec": {"initContainers": INIT}}}},
    }


def llm_inference_service() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": {"model": {"uri": f"kit://{REF}"}, "template": {"containers": []}},
    }


async def test_a_leaderworkerset_is_pinned_in_both_templates() -> None:
    resolver = FakeResolver()
    decision = await engine(resolver).mutate(review(lws()))
    pinned = f"{REF}@{resolver.digest(REF)}"
    base = "/spec/leaderWorkerTemplate"
    assert decision.reason == pinning.Reason.PINNED
    assert decision.values == {
        f"{base}/leaderTemplate/spec{ENV}": pinned,
        f"{base}/workerTemplate/spec{ENV}": pinned,
    }
    assert {call for call, _ in resolver.calls} == {REF}


@pytest.mark.parametrize(
    ("child", "owner"),
    [
        (statefulset, ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")),  # the leader set
        (statefulset, ("v1", "Pod")),  # LWS: the workers' StatefulSet is owned by the leader Pod
        (raycluster, ("ray.io/v1", "RayService")),
        (raycluster, ("ray.io/v1", "RayJob")),
        (raycluster, ("platform.example.com/v1", "MLApp")),  # any controller owner
    ],
)
async def test_a_template_with_a_controller_owner_is_left_alone(
    child: Any, owner: tuple[str, str]
) -> None:
    resolver = FakeResolver()
    decision = await engine(resolver).mutate(review(owned_by(child(), *owner)))
    assert decision.reason == pinning.Reason.OWNED
    assert not decision.changes and resolver.calls == []


async def test_owned_pods_and_kserve_resources_are_still_pinned() -> None:
    resolver = FakeResolver()
    pod = owned_by(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "head"},
         "spec": {"initContainers": INIT}},
        "ray.io/v1", "RayCluster",
    )  # fmt: skip
    assert (await engine(resolver).mutate(review(pod))).values == {
        f"/spec{ENV}": f"{REF}@{resolver.digest(REF)}"
    }
    llm = owned_by(llm_inference_service(), "platform.example.com/v1", "MLApp")
    assert (await engine(resolver).mutate(review(llm))).values == {
        "/spec/model/uri": f"kit://{REF}@{resolver.digest(REF)}"
    }


async def test_pods_only_leaves_custom_pod_templates_but_pins_model_uris() -> None:
    resolver = FakeResolver()
    eng = engine(resolver, mode="pods-only")
    for obj in (lws(), raycluster(), {"apiVersion": "v1", "kind": "PodTemplate",
                                      "template": {"spec": {"initContainers": INIT}}}):  # fmt: skip
        assert (await eng.mutate(review(obj))).reason == pinning.Reason.PODS_ONLY
    assert resolver.calls == []
    decision = await eng.mutate(review(llm_inference_service()))
    assert decision.reason == pinning.Reason.PINNED
    assert list(decision.values) == ["/spec/model/uri"]


async def test_a_disabled_default_is_not_pinned() -> None:
    resolver = FakeResolver()
    off = sites.SitesSettings(disabled_defaults=("leaderworkersets.leaderworkerset.x-k8s.io",))
    decision = await engine(resolver, sites=off).mutate(review(lws()))
    assert decision.reason == pinning.Reason.NOTHING_TO_DO


# --- image volumes ----------------------------------------------------------------------


def pod_with_image_volume(reference: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {
            "containers": [{"name": "s", "image": "reg.example.com/serve:1",
                            "volumeMounts": [{"name": "model", "mountPath": "/models"}]}],
            "volumes": [{"name": "model", "image": {"reference": reference}}],
        },
    }  # fmt: skip


async def test_an_image_volume_naming_a_kitops_modelkit_is_admitted_with_what_to_do() -> None:
    resolver = FakeResolver()  # every repository is a KitOps ModelKit by default
    digest = "sha256:" + "c" * 64
    decision = await engine(resolver).validate(review(pod_with_image_volume(f"{REF}@{digest}")))
    assert decision.allowed and decision.reason == pinning.Reason.VERIFIED
    (warning,) = decision.warnings
    assert warning.startswith(f"volume \"model\" image.reference: '{REF}@{digest}' resolves to ")
    assert "a KitOps ModelKit, which the kubelet cannot mount as an image volume" in warning
    assert "kitops #784" in warning
    assert "`kit pack --use-model-pack`" in warning and "kitops-init" in warning


@pytest.mark.parametrize("fmt", ["modelpack", "other"])
async def test_modelpacks_and_images_in_image_volumes_get_no_warning(fmt: Any) -> None:
    resolver = FakeResolver()
    resolver.formats["reg.example.com/llama"] = fmt
    decision = await engine(resolver).validate(review(pod_with_image_volume(REF)))
    assert decision.allowed and decision.warnings == ()


async def test_an_image_volume_the_registry_cannot_answer_for_is_not_a_failure() -> None:
    """It is looked up only for the warning: no denial, no 'not verified' warning."""
    resolver = FakeResolver()
    resolver.failures["reg.example.com/llama"] = errors.UnreachableError("connection refused")
    decision = await engine(resolver).validate(review(pod_with_image_volume(REF)))
    assert decision.allowed and decision.reason == pinning.Reason.VERIFIED
    assert decision.warnings == ()


def test_image_volume_problem_names_kit_indexes_and_spares_everything_else() -> None:
    def manifest(fmt: Any, artifact_type: str | None = None) -> Manifest:
        return Manifest(
            digest="sha256:" + "d" * 64,
            media_type="application/vnd.oci.image.index.v1+json",
            size=1,
            format=fmt,
            artifact_type=artifact_type,
        )

    index = manifest("oci-index", artifacts.KITOPS_INDEX_ARTIFACT_TYPE)
    assert str(artifacts.image_volume_problem(index)).startswith("a KitOps ModelKit index, ")
    for other in (manifest("oci-index"), manifest("modelpack"), manifest("other")):
        assert artifacts.image_volume_problem(other) is None


# -- the workload's own credentials -----------------------------------------------------------


async def test_a_custom_resource_uses_the_pull_secrets_and_account_of_its_own_pod_specs() -> None:
    obj = lws()
    templates = obj["spec"]["leaderWorkerTemplate"]
    templates["leaderTemplate"]["spec"] |= {
        "serviceAccountName": "vllm",
        "imagePullSecrets": [{"name": "leader-pull"}],
    }
    templates["workerTemplate"]["spec"] |= {
        "imagePullSecrets": [{"name": "leader-pull"}, {"name": "worker-pull"}],
    }
    credentials = RecordingCredentials()
    eng = pinning.Engine(FakeResolver(), credentials=credentials)
    decision = await eng.mutate(review(obj))
    assert decision.reason == pinning.Reason.PINNED
    assert credentials.calls == [("ml", "reg.example.com/llama", True)]
    assert credentials.pod_specs == [
        {
            "imagePullSecrets": [{"name": "leader-pull"}, {"name": "worker-pull"}],
            "serviceAccountName": "vllm",
        }
    ]


async def test_an_llminferenceservice_model_uri_uses_its_template_credentials() -> None:
    obj = llm_inference_service()
    obj["spec"]["template"] |= {"serviceAccountName": "llm", "imagePullSecrets": [{"name": "s"}]}
    credentials = RecordingCredentials()
    eng = pinning.Engine(FakeResolver(), credentials=credentials)
    decision = await eng.mutate(review(obj))
    assert decision.reason == pinning.Reason.PINNED
    assert credentials.pod_specs == [obj["spec"]["template"]]


async def test_a_resource_without_pod_specs_falls_back_to_central_credentials_only() -> None:
    obj = llm_inference_service()
    del obj["spec"]["template"]
    credentials = RecordingCredentials()
    eng = pinning.Engine(FakeResolver(), credentials=credentials)
    await eng.mutate(review(obj))
    assert credentials.pod_specs == [None]


async def test_folded_pull_secrets_are_deduplicated_by_name_and_junk_is_dropped() -> None:
    obj = lws()
    templates = obj["spec"]["leaderWorkerTemplate"]
    many = [{"name": f"s{i % 50}"} for i in range(5_000)]
    templates["leaderTemplate"]["spec"]["imagePullSecrets"] = [*many, "junk", {"name": 3}]
    templates["workerTemplate"]["spec"]["imagePullSecrets"] = many
    credentials = RecordingCredentials()
    await pinning.Engine(FakeResolver(), credentials=credentials).mutate(review(obj))
    (spec,) = credentials.pod_specs
    assert spec is not None
    assert spec["imagePullSecrets"] == [{"name": f"s{i}"} for i in range(50)]
