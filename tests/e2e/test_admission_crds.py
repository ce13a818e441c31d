"""Custom resources through the real apiserver: KServe InferenceService ``kit://`` storage
URIs, shipped defaults (LeaderWorkerSet, KubeRay RayService, KServe LLMInferenceService: CRD
subsets in tests/e2e/crds), a platform team's own CRD declared as an extra site in kitpin's
settings (no code for it in kitpin), core PodTemplates, and the warning for an image volume
that names a KitOps-format ModelKit (docs/sites.md)."""

from __future__ import annotations

from typing import Any

import pytest

from harness import modelkit, procs
from tests.e2e.conftest import (
    EXTRA_GROUP,
    EXTRA_KIND,
    EXTRA_VERSION,
    TIMEOUT,
    Kitpin,
    at,
    kitops_init,
    owned_by,
    pinned_ref,
    pins,
    pod,
    pod_spec,
    ref_to,
)

pytestmark = pytest.mark.e2e

STORAGE_URI = "/spec/predictor/model/storageUri"


def test_inference_service_kit_storage_uri_is_pinned(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_modelkit(registry, repo, "production")
    uri = f"kit://{ref_to(registry, repo, 'production')}"
    isvc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "llama", "namespace": namespace},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "storageUri": uri,
                    "args": ["--max-model-len=4096"],
                },
            },
            # Not a ModelKit scheme: left exactly as written.
            "transformer": {"containers": [{"name": "t", "image": "registry.example/t:1"}]},
        },
    }

    created = kitpin.create(isvc)

    assert created.ok, created.stderr
    stored = kitpin.get("inferenceservice", "llama", namespace)
    assert at(stored, STORAGE_URI) == "kit://" + pinned_ref(registry, repo, "production", digest)
    record = pins(stored)
    assert record is not None and set(record) == {STORAGE_URI}
    assert record[STORAGE_URI]["from"] == uri
    assert record[STORAGE_URI]["digest"] == digest
    assert stored["spec"]["transformer"] == isvc["spec"]["transformer"]


def test_extra_site_from_settings_pins_a_custom_resource(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    base = modelkit.push_modelkit(registry, f"{repo}/base", "v1")
    adapter = modelkit.push_modelkit(registry, f"{repo}/adapter", "v7", fmt="modelpack")
    already = modelkit.push_modelkit(registry, f"{repo}/tokenizer", "v2")
    tokenizer = pinned_ref(registry, f"{repo}/tokenizer", "v2", already)
    resource = {
        "apiVersion": f"{EXTRA_GROUP}/{EXTRA_VERSION}",
        "kind": EXTRA_KIND,
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "models": [
                {"name": "base", "source": ref_to(registry, f"{repo}/base", "v1")},
                {"name": "adapter", "source": ref_to(registry, f"{repo}/adapter", "v7")},
                {"name": "tokenizer", "source": tokenizer},  # already pinned: kept as is
            ],
        },
    }

    created = kitpin.create(resource)

    assert created.ok, created.stderr
    stored = kitpin.get(f"modeldeployments.{EXTRA_GROUP}", "chat", namespace)
    assert [m["source"] for m in stored["spec"]["models"]] == [
        pinned_ref(registry, f"{repo}/base", "v1", base),
        pinned_ref(registry, f"{repo}/adapter", "v7", adapter),
        tokenizer,
    ]
    record = pins(stored)
    assert record is not None
    assert {k: v["digest"] for k, v in record.items()} == {
        "/spec/models/0/source": base,
        "/spec/models/1/source": adapter,
    }


ENV = "/initContainers/0/env/0/value"
LWS = "/spec/leaderWorkerTemplate"


def test_leaderworkerset_is_pinned_once_and_its_statefulsets_are_left_alone(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_modelkit(registry, repo, "production")
    tagged = ref_to(registry, repo, "production")
    pinned = pinned_ref(registry, repo, "production", digest)
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "vllm", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": 2,
                "leaderTemplate": {"metadata": {"labels": {"role": "leader"}},
                                   "spec": pod_spec(tagged)},
                "workerTemplate": {"metadata": {"labels": {"role": "worker"}},
                                   "spec": pod_spec(tagged)},
            },
        },
    }  # fmt: skip

    created = kitpin.create(lws)

    assert created.ok, created.stderr
    stored = kitpin.get("leaderworkersets.leaderworkerset.x-k8s.io", "vllm", namespace)
    leader, worker = f"{LWS}/leaderTemplate/spec{ENV}", f"{LWS}/workerTemplate/spec{ENV}"
    assert (at(stored, leader), at(stored, worker)) == (pinned, pinned)
    record = pins(stored)
    assert record is not None and {k: v["digest"] for k, v in record.items()} == {
        leader: digest,
        worker: digest,
    }

    # What the LWS controller does (none runs here): a StatefulSet it controls. Its template
    # is left exactly as written (here tag-only, so the test sees it); its Pods are pinned.
    owned_before = kitpin.admissions("mutate", "TemplateOwnedByController")
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "vllm-0",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
                 "name": "vllm", "uid": stored["metadata"]["uid"], "controller": True}
            ],
        },
        "spec": {
            "replicas": 1,
            "serviceName": "vllm",
            "selector": {"matchLabels": {"app": "vllm-0"}},
            "template": {"metadata": {"labels": {"app": "vllm-0"}}, "spec": pod_spec(tagged)},
        },
    }  # fmt: skip
    made = kitpin.create(statefulset)
    assert made.ok, made.stderr
    child = kitpin.get("statefulset", "vllm-0", namespace)
    assert at(child, f"/spec/template/spec{ENV}") == tagged
    assert pins(child) is None
    assert kitpin.admissions("mutate", "TemplateOwnedByController") > owned_before
    pods: list[dict[str, Any]] = []

    def created_pod() -> bool:
        pods[:] = owned_by(kitpin.list("pod", namespace), child["metadata"]["uid"])
        return bool(pods)

    procs.wait_until(created_pod, timeout=TIMEOUT, what="the StatefulSet's Pod")
    assert at(pods[0], f"/spec{ENV}") == pinned


def test_rayservice_is_pinned_in_every_group_and_stable_on_reapply(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    first = modelkit.push_modelkit(registry, repo, "v1", seed=1)
    tagged = ref_to(registry, repo, "v1")
    kit_cli = {  # a worker group that fetches with the kit CLI instead of kitops-init
        "containers": [{"name": "fetch", "image": "ghcr.io/kitops-ml/kitops:v1.7.0",
                        "args": ["unpack", tagged, "-d", "/models"]}],
    }  # fmt: skip
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "serve", "namespace": namespace},
        "spec": {
            "serveConfigV2": "applications: []",
            "rayClusterConfig": {
                "rayVersion": "2.40.0",
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": pod_spec(tagged)}},
                "workerGroupSpecs": [
                    {"groupName": "gpu", "replicas": 1, "template": {"spec": pod_spec(tagged)}},
                    {"groupName": "cli", "replicas": 1, "template": {"spec": kit_cli}},
                ],
            },
        },
    }
    config = "/spec/rayClusterConfig"
    expected = [
        f"{config}/headGroupSpec/template/spec{ENV}",
        f"{config}/workerGroupSpecs/0/template/spec{ENV}",
        f"{config}/workerGroupSpecs/1/template/spec/containers/0/args/1",
    ]

    applied = kitpin.apply(manifest, server_side=True)

    assert applied.ok, applied.stderr
    stored = kitpin.get("rayservices.ray.io", "serve", namespace)
    pinned = pinned_ref(registry, repo, "v1", first)
    assert [at(stored, p) for p in expected] == [pinned] * 3
    record = pins(stored)
    assert record is not None and set(record) == set(expected)

    # The tag moves; GitOps re-applies the tag-only manifest: every group keeps its digest.
    modelkit.push_modelkit(registry, repo, "v1", seed=2)
    again = kitpin.apply(manifest, server_side=True)
    assert again.ok, again.stderr
    kept = kitpin.get("rayservices.ray.io", "serve", namespace)
    assert [at(kept, p) for p in expected] == [pinned] * 3
    assert kept["metadata"]["generation"] == stored["metadata"]["generation"]


def test_llm_inference_service_model_uris_and_pod_specs_are_pinned(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    model = modelkit.push_modelkit(registry, f"{repo}/llama", "3.1")
    lora = f"{repo}/sql-lora"
    adapter = modelkit.push_modelkit(registry, lora, "v2", fmt="modelpack")
    init = modelkit.push_modelkit(registry, f"{repo}/tokenizer", "v1")
    llm = {
        "apiVersion": "serving.kserve.io/v1alpha1",  # v1alpha2 is the stored version
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": namespace},
        "spec": {
            "model": {
                "uri": "kit://" + ref_to(registry, f"{repo}/llama", "3.1"),
                "name": "llama",
                "lora": {
                    "adapters": [
                        {"name": "sql", "uri": f"kit://{ref_to(registry, lora, 'v2')}"},
                        {"name": "chat", "uri": "hf://example/chat-lora"},
                    ]
                },
            },
            "replicas": 1,
            "template": {
                "initContainers": [kitops_init(ref_to(registry, f"{repo}/tokenizer", "v1"))],
                "containers": [{"name": "main", "image": "registry.example/vllm:1"}],
            },
        },
    }  # fmt: skip

    created = kitpin.create(llm)

    assert created.ok, created.stderr
    stored = kitpin.get("llminferenceservices.serving.kserve.io", "llama", namespace)
    spec = stored["spec"]
    assert spec["model"]["uri"] == "kit://" + pinned_ref(registry, f"{repo}/llama", "3.1", model)
    sql, chat = spec["model"]["lora"]["adapters"]
    assert sql["uri"] == "kit://" + pinned_ref(registry, lora, "v2", adapter)
    assert chat["uri"] == "hf://example/chat-lora"  # not a ModelKit: untouched
    assert at(stored, f"/spec/template{ENV}") == pinned_ref(
        registry, f"{repo}/tokenizer", "v1", init
    )
    record = pins(stored)
    assert record is not None and set(record) == {
        "/spec/model/uri",
        "/spec/model/lora/adapters/0/uri",
        f"/spec/template{ENV}",
    }


def test_pod_template_is_pinned(kitpin: Kitpin, namespace: str, repo: str) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_modelkit(registry, repo, "stable")
    template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "worker", "namespace": namespace},
        "template": {"metadata": {"labels": {"app": "w"}},
                     "spec": pod_spec(ref_to(registry, repo, "stable"))},
    }  # fmt: skip

    created = kitpin.create(template)

    assert created.ok, created.stderr
    stored = kitpin.get("podtemplate", "worker", namespace)
    pointer = f"/template/spec{ENV}"
    assert at(stored, pointer) == pinned_ref(registry, repo, "stable", digest)
    record = pins(stored)
    assert record is not None and set(record) == {pointer}


def test_an_image_volume_of_a_kitops_modelkit_is_pinned_with_a_warning(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    kitops = modelkit.push_modelkit(registry, f"{repo}/kitops", "v1")
    modelpack = modelkit.push_modelkit(registry, f"{repo}/modelpack", "v1", fmt="modelpack")
    volumes = [
        {"name": "models", "emptyDir": {}},
        {"name": "a", "image": {"reference": ref_to(registry, f"{repo}/kitops", "v1")}},
        {"name": "b", "image": {"reference": ref_to(registry, f"{repo}/modelpack", "v1")}},
    ]

    created = kitpin.create(pod("serve", namespace, None, volumes=volumes))

    assert created.ok, created.stderr
    stored = created.obj
    assert at(stored, "/spec/volumes/1/image/reference") == pinned_ref(
        registry, f"{repo}/kitops", "v1", kitops
    )
    assert at(stored, "/spec/volumes/2/image/reference") == pinned_ref(
        registry, f"{repo}/modelpack", "v1", modelpack
    )
    (warning,) = created.warnings  # the ModelPack mounts: no warning for it
    assert warning.startswith(
        f'volume "a" image.reference: \'{ref_to(registry, f"{repo}/kitops", "v1")}@'
    )
    assert "the kubelet cannot mount as an image volume" in warning
    assert "kit pack --use-model-pack" in warning
