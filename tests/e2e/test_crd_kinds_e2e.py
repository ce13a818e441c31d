"""Every shipped model-serving and training kind (controller/sites/defaults.py), with its CRD
installed (subsets in tests/e2e/crds), pinned at its owner with its own credentials.

Per kind, against a private repository (``PRIVATE_USER`` only) and no central credential:

1. the custom resource, a tag in every pod template, its pod templates naming a pull secret of
   its own namespace: every template is pinned to the one digest, with that secret;
2. the test plays the operator (none runs here): a child workload made from the stored
   (pinned) object keeps the owner's digest and is left alone (no pin of its own, so no extra
   ReplicaSet, revision or group); a Pod made from it carries the same digest;
3. the tag moves in the registry; the owner is scaled up (an UPDATE, the references
   unchanged): it keeps its digest, and the new Pod carries it too: one digest for every
   replica;
4. the same resource in another namespace, naming a secret that exists only in the first one,
   is denied (401): the secret is never read across namespaces.

The manifests are written by hand from each project's public API, not generated from kitpin's
defaults, so a wrong default path fails here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness import modelkit
from tests.e2e.conftest import (
    PRIVATE_USER,
    Kitpin,
    at,
    pinned_ref,
    pins,
    pod_spec,
    pull_secret,
    ref_to,
)

pytestmark = pytest.mark.e2e

ENV = "/initContainers/0/env/0/value"
SECRET = "team-regcred"

PodSpec = dict[str, Any]


def _template(spec: PodSpec, **labels: str) -> dict[str, Any]:
    return {"metadata": {"labels": dict(labels)}, "spec": spec} if labels else {"spec": spec}


@dataclass(frozen=True)
class Kind:
    """One kind as its users write it."""

    resource: str
    """``<plural>.<group>``: the CRD's name, what kubectl gets."""
    api_version: str
    kind: str
    spec: Callable[[Callable[..., PodSpec]], dict[str, Any]]
    """The object's spec, given a maker of pod specs (a fresh one per call)."""
    pod_specs: tuple[str, ...]
    """Every pod spec ``spec`` writes, as JSON pointers into the object."""
    scale: tuple[str, Any] | None
    """A JSON-patch ``replace`` that scales the owner up (pointer, value); None: the kind
    scales without changing the object (Knative revisions, autoscaled)."""
    child: Callable[[dict[str, Any]], tuple[str, dict[str, Any], str]] | None = None
    """What the operator makes from the stored owner: (resource, manifest without metadata,
    pointer of the pod spec its Pods are made from). None: the operator makes Pods."""

    def manifest(
        self, name: str, namespace: str, spec_of: Callable[..., PodSpec]
    ) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": self.spec(spec_of),
        }


def _replicas(field: str, *types: str, restart: str = "OnFailure") -> Callable[..., dict[str, Any]]:
    """Kubeflow's map of replica type to ReplicaSpec (common_types.go)."""

    def spec(ps: Callable[..., PodSpec]) -> dict[str, Any]:
        return {
            field: {
                t: {"replicas": 1, "restartPolicy": restart, "template": _template(ps(restart))}
                for t in types
            }
        }

    return spec


def _kubeflow(resource: str, kind: str, field: str, *types: str, version: str = "v1") -> Kind:
    return Kind(
        resource=resource,
        api_version=f"kubeflow.org/{version}",
        kind=kind,
        spec=_replicas(field, *types),
        pod_specs=tuple(f"/spec/{field}/{t}/template/spec" for t in types),
        scale=(f"/spec/{field}/{types[-1]}/replicas", 3),
    )


def _ray_cluster(ps: Callable[..., PodSpec]) -> dict[str, Any]:
    return {
        "rayVersion": "2.40.0",
        "headGroupSpec": {"rayStartParams": {}, "template": _template(ps())},
        "workerGroupSpecs": [
            {"groupName": "gpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 4,
             "rayStartParams": {}, "template": _template(ps())},
        ],
    }  # fmt: skip


def _job_of_jobset(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    return (
        "job",
        {"apiVersion": "batch/v1", "kind": "Job",
         "spec": copy.deepcopy(owner["spec"]["replicatedJobs"][0]["template"]["spec"])},
        "/spec/template/spec",
    )  # fmt: skip


def _ray_cluster_of(field: str) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any], str]]:
    def child(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        return (
            "rayclusters.ray.io",
            {"apiVersion": "ray.io/v1", "kind": "RayCluster",
             "spec": copy.deepcopy(owner["spec"][field])},
            "/spec/workerGroupSpecs/0/template/spec",
        )  # fmt: skip

    return child


def _configuration_of_service(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    return (
        "configurations.serving.knative.dev",
        {"apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
         "spec": {"template": copy.deepcopy(owner["spec"]["template"])}},
        "/spec/template/spec",
    )  # fmt: skip


def _revision_of_configuration(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    return (
        "revisions.serving.knative.dev",
        {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
         "spec": copy.deepcopy(owner["spec"]["template"]["spec"])},
        "/spec",
    )  # fmt: skip


def _replica_set_of_rollout(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    template = copy.deepcopy(owner["spec"]["template"])
    return (
        "replicaset",
        {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "spec": {"replicas": 0, "selector": copy.deepcopy(owner["spec"]["selector"]),
                  "template": template}},
        "/spec/template/spec",
    )  # fmt: skip


def _statefulset_of_lws(owner: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    template = copy.deepcopy(owner["spec"]["leaderWorkerTemplate"]["workerTemplate"])
    return (
        "statefulset",
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "spec": {"replicas": 0, "serviceName": "w",
                  "selector": {"matchLabels": template["metadata"]["labels"]},
                  "template": template}},
        "/spec/template/spec",
    )  # fmt: skip


KINDS = [
    Kind(
        resource="leaderworkersets.leaderworkerset.x-k8s.io",
        api_version="leaderworkerset.x-k8s.io/v1",
        kind="LeaderWorkerSet",
        spec=lambda ps: {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": 2,
                "leaderTemplate": _template(ps(), role="leader"),
                "workerTemplate": _template(ps(), role="worker"),
            },
        },
        pod_specs=(
            "/spec/leaderWorkerTemplate/leaderTemplate/spec",
            "/spec/leaderWorkerTemplate/workerTemplate/spec",
        ),
        scale=("/spec/replicas", 3),
        child=_statefulset_of_lws,
    ),
    Kind(
        resource="jobsets.jobset.x-k8s.io",
        api_version="jobset.x-k8s.io/v1alpha2",
        kind="JobSet",
        spec=lambda ps: {
            "replicatedJobs": [
                {
                    "name": name,
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": 1,
                            "completions": 1,
                            "backoffLimit": 0,
                            "template": _template(ps("Never")),
                        }
                    },
                }
                for name in ("workers", "driver")
            ]
        },
        pod_specs=(
            "/spec/replicatedJobs/0/template/spec/template/spec",
            "/spec/replicatedJobs/1/template/spec/template/spec",
        ),
        scale=("/spec/replicatedJobs/0/replicas", 3),
        child=_job_of_jobset,
    ),
    Kind(
        resource="rayclusters.ray.io",
        api_version="ray.io/v1",
        kind="RayCluster",
        spec=_ray_cluster,
        pod_specs=("/spec/headGroupSpec/template/spec", "/spec/workerGroupSpecs/0/template/spec"),
        scale=("/spec/workerGroupSpecs/0/replicas", 3),
    ),
    Kind(
        resource="rayservices.ray.io",
        api_version="ray.io/v1",
        kind="RayService",
        spec=lambda ps: {"serveConfigV2": "applications: []", "rayClusterConfig": _ray_cluster(ps)},
        pod_specs=(
            "/spec/rayClusterConfig/headGroupSpec/template/spec",
            "/spec/rayClusterConfig/workerGroupSpecs/0/template/spec",
        ),
        scale=("/spec/rayClusterConfig/workerGroupSpecs/0/replicas", 3),
        child=_ray_cluster_of("rayClusterConfig"),
    ),
    Kind(
        resource="rayjobs.ray.io",
        api_version="ray.io/v1",
        kind="RayJob",
        spec=lambda ps: {
            "entrypoint": "python train.py",
            "rayClusterSpec": _ray_cluster(ps),
            "submitterPodTemplate": _template(ps("Never")),
        },
        pod_specs=(
            "/spec/rayClusterSpec/headGroupSpec/template/spec",
            "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec",
            "/spec/submitterPodTemplate/spec",
        ),
        scale=("/spec/rayClusterSpec/workerGroupSpecs/0/replicas", 3),
        child=_ray_cluster_of("rayClusterSpec"),
    ),
    Kind(
        resource="services.serving.knative.dev",
        api_version="serving.knative.dev/v1",
        kind="Service",
        spec=lambda ps: {"template": _template(ps())},
        pod_specs=("/spec/template/spec",),
        scale=None,  # the autoscaler scales revisions; the Service does not change
        child=_configuration_of_service,
    ),
    Kind(
        resource="configurations.serving.knative.dev",
        api_version="serving.knative.dev/v1",
        kind="Configuration",
        spec=lambda ps: {"template": _template(ps())},
        pod_specs=("/spec/template/spec",),
        scale=None,
        child=_revision_of_configuration,
    ),
    Kind(
        resource="revisions.serving.knative.dev",
        api_version="serving.knative.dev/v1",
        kind="Revision",
        spec=lambda ps: {**ps(), "containerConcurrency": 4},
        pod_specs=("/spec",),
        scale=None,
    ),
    Kind(
        resource="llminferenceservices.serving.kserve.io",
        api_version="serving.kserve.io/v1alpha1",
        kind="LLMInferenceService",
        spec=lambda ps: {
            "model": {"uri": "hf://example/llama", "name": "llama"},
            "replicas": 1,
            "template": ps(),
            "worker": ps(),
        },
        pod_specs=("/spec/template", "/spec/worker"),
        scale=("/spec/replicas", 3),
    ),
    _kubeflow("pytorchjobs.kubeflow.org", "PyTorchJob", "pytorchReplicaSpecs", "Master", "Worker"),
    _kubeflow("tfjobs.kubeflow.org", "TFJob", "tfReplicaSpecs", "PS", "Worker"),
    _kubeflow(
        "mpijobs.kubeflow.org",
        "MPIJob",
        "mpiReplicaSpecs",
        "Launcher",
        "Worker",
        version="v2beta1",
    ),
    _kubeflow("xgboostjobs.kubeflow.org", "XGBoostJob", "xgbReplicaSpecs", "Master", "Worker"),
    _kubeflow("paddlejobs.kubeflow.org", "PaddleJob", "paddleReplicaSpecs", "Master", "Worker"),
    _kubeflow("jaxjobs.kubeflow.org", "JAXJob", "jaxReplicaSpecs", "Worker"),
    Kind(
        resource="trainjobs.trainer.kubeflow.org",
        api_version="trainer.kubeflow.org/v1alpha1",
        kind="TrainJob",
        spec=lambda ps: {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": 1},
            # v2.0's patch of the node Job's pod spec, and v2.1's template override
            "podSpecOverrides": [{"targetJobs": [{"name": "node"}], **ps()}],
            "podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": ps()}],
        },
        pod_specs=("/spec/podSpecOverrides/0", "/spec/podTemplateOverrides/0/spec"),
        scale=("/spec/trainer/numNodes", 3),
    ),
    Kind(
        resource="rollouts.argoproj.io",
        api_version="argoproj.io/v1alpha1",
        kind="Rollout",
        spec=lambda ps: {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": _template(ps(), app="serve"),
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        },
        pod_specs=("/spec/template/spec",),
        scale=("/spec/replicas", 3),
        child=_replica_set_of_rollout,
    ),
    Kind(
        resource="jobs.batch.volcano.sh",
        api_version="batch.volcano.sh/v1alpha1",
        kind="Job",
        spec=lambda ps: {
            "minAvailable": 1,
            "schedulerName": "volcano",
            "tasks": [{"name": "worker", "replicas": 1, "template": _template(ps("Never"))}],
        },
        pod_specs=("/spec/tasks/0/template/spec",),
        scale=("/spec/tasks/0/replicas", 3),
    ),
]


def _owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
    }


def _operator_pod(kitpin: Kitpin, owner: dict[str, Any], pointer: str, name: str) -> dict[str, Any]:
    """What the operator does on scale-up: a Pod from the owner's stored pod spec."""
    spec = {
        k: v
        for k, v in copy.deepcopy(at(owner, pointer)).items()
        if k not in ("targetJobs", "containerConcurrency")
    }
    made = kitpin.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "ownerReferences": [_owner_ref(owner)],
            },
            "spec": spec,
        }
    )
    assert made.ok, made.stderr
    return made.obj


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.resource)
def test_kind_is_pinned_once_with_its_own_pull_secret_and_keeps_one_digest(
    kind: Kind, kitpin: Kitpin, new_namespace: Any, repo: str
) -> None:
    registry = kitpin.registries.private
    first = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER, seed=1)
    tagged = ref_to(registry, repo, "production")
    pinned = pinned_ref(registry, repo, "production", first)
    team, other = new_namespace("team"), new_namespace("other")
    assert kitpin.create(pull_secret(SECRET, team, registry.host)).ok

    def spec_of(restart: str | None = None) -> PodSpec:
        extra: dict[str, Any] = {"imagePullSecrets": [{"name": SECRET}]}
        if restart is not None:
            extra["restartPolicy"] = restart
        return pod_spec(tagged, **extra)

    # 1. The owner: every template pinned to one digest, with its own namespace's secret.
    created = kitpin.create(kind.manifest("model", team, spec_of))

    assert created.ok, created.stderr
    owner = kitpin.get(kind.resource, "model", team)
    expected = {f"{p}{ENV}" for p in kind.pod_specs}
    assert {p: at(owner, p) for p in expected} == dict.fromkeys(expected, pinned)
    record = pins(owner)
    assert record is not None
    assert {p: r["digest"] for p, r in record.items()} == dict.fromkeys(expected, first)

    # 2. The operator's child (a template it controls) keeps the owner's digests and is left
    # alone; the Pods are made from it (or from the owner when the operator makes Pods).
    parent, pod_from = owner, kind.pod_specs[-1]
    if kind.child is not None:
        resource, child, pod_from = kind.child(owner)
        child["metadata"] = {
            "name": "model-child",
            "namespace": team,
            "ownerReferences": [_owner_ref(owner)],
        }
        owned_before = kitpin.admissions("mutate", "TemplateOwnedByController")
        made = kitpin.create(child)
        assert made.ok, made.stderr
        parent = kitpin.get(resource, "model-child", team)
        assert at(parent, f"{pod_from}{ENV}") == pinned
        # Left alone by the owner rule: no pin of its own, so no revision or group of its own.
        assert kitpin.admissions("mutate", "TemplateOwnedByController") > owned_before
        assert pins(parent) is None
    pods = [_operator_pod(kitpin, parent, pod_from, "model-0")]

    # 3. The tag moves; the owner scales up. Every replica keeps the one digest.
    moved = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER, seed=2)
    assert moved != first
    if kind.scale is not None:
        pointer, value = kind.scale
        patch = [{"op": "replace", "path": pointer, "value": value}]
        scaled = kitpin.kubectl(
            "patch", kind.resource, "model", "-n", team, "--type=json", "-p", json.dumps(patch)
        )
        assert scaled.ok, scaled.stderr
        owner = kitpin.get(kind.resource, "model", team)
        assert at(owner, pointer) == value
        assert {p: at(owner, p) for p in expected} == dict.fromkeys(expected, pinned)
    if kind.child is None:
        parent = owner
    pods.append(_operator_pod(kitpin, parent, pod_from, "model-1"))
    assert [at(p, f"/spec{ENV}") for p in pods] == [pinned, pinned]

    # 4. Another namespace names the same secret, which exists only in the first: denied.
    borrowed = kitpin.create(kind.manifest("model", other, spec_of))

    assert not borrowed.ok
    assert f"cannot pin '{tagged}'" in borrowed.stderr, borrowed.stderr
    assert "Unauthorized" in borrowed.stderr and "(401)" in borrowed.stderr
    assert not kitpin.exists(kind.resource, "model", other)
