"""The custom resources kitpin reads out of the box: model-serving and training operators that
embed pod templates (or, for KServe's LLMInferenceService, model URIs too). Pure data.

Each entry is an :class:`~controller.sites.extra.ExtraSite` under the name of its resource
(``<plural>.<group>``, the name of its CRD). Every path, with the project, API version and
source file it comes from, is listed in the "Paths visited" section of
:mod:`controller.sites.finding` (a test keeps the two equal); docs/sites.md says how to turn an
entry off (``sites.disabledDefaults``) or replace it (a ``sites.extra`` entry of the same
group and kind). Every version of an API is matched: the listed paths are the same in each.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from controller.sites.extra import ExtraSite

__all__ = ["DEFAULT_SITES", "plural"]


def _pods(group: str, kind: str, *pod_specs: str) -> ExtraSite:
    return ExtraSite(group=group, kind=kind, pod_specs=pod_specs)


_REPLICA_SPECS = "/spec/{}/*/template/spec"  # Kubeflow training-operator: map of ReplicaSpec
_KUBEFLOW = "kubeflow.org"
_RAY = "ray.io"
_KNATIVE = "serving.knative.dev"

DEFAULT_SITES: Final[Mapping[str, ExtraSite]] = MappingProxyType(
    {
        "leaderworkersets.leaderworkerset.x-k8s.io": _pods(
            "leaderworkerset.x-k8s.io",
            "LeaderWorkerSet",
            "/spec/leaderWorkerTemplate/leaderTemplate/spec",
            "/spec/leaderWorkerTemplate/workerTemplate/spec",
        ),
        "jobsets.jobset.x-k8s.io": _pods(
            "jobset.x-k8s.io", "JobSet", "/spec/replicatedJobs/*/template/spec/template/spec"
        ),
        "rayclusters.ray.io": _pods(
            _RAY,
            "RayCluster",
            "/spec/headGroupSpec/template/spec",
            "/spec/workerGroupSpecs/*/template/spec",
        ),
        "rayservices.ray.io": _pods(
            _RAY,
            "RayService",
            "/spec/rayClusterConfig/headGroupSpec/template/spec",
            "/spec/rayClusterConfig/workerGroupSpecs/*/template/spec",
        ),
        "rayjobs.ray.io": _pods(
            _RAY,
            "RayJob",
            "/spec/rayClusterSpec/headGroupSpec/template/spec",
            "/spec/rayClusterSpec/workerGroupSpecs/*/template/spec",
            "/spec/submitterPodTemplate/spec",
        ),
        "services.serving.knative.dev": _pods(_KNATIVE, "Service", "/spec/template/spec"),
        "configurations.serving.knative.dev": _pods(
            _KNATIVE, "Configuration", "/spec/template/spec"
        ),
        "revisions.serving.knative.dev": _pods(_KNATIVE, "Revision", "/spec"),
        "llminferenceservices.serving.kserve.io": ExtraSite(
            group="serving.kserve.io",
            kind="LLMInferenceService",
            paths=("/spec/model/uri", "/spec/model/lora/adapters/*/uri"),
            prefix="kit://",
            pod_specs=(
                "/spec/template",
                "/spec/worker",
                "/spec/prefill/template",
                "/spec/prefill/worker",
                "/spec/router/scheduler/template",
                "/spec/router/scheduler/tokenizer/template",
            ),
        ),
        "pytorchjobs.kubeflow.org": _pods(
            _KUBEFLOW, "PyTorchJob", _REPLICA_SPECS.format("pytorchReplicaSpecs")
        ),
        "tfjobs.kubeflow.org": _pods(_KUBEFLOW, "TFJob", _REPLICA_SPECS.format("tfReplicaSpecs")),
        "mpijobs.kubeflow.org": _pods(
            _KUBEFLOW, "MPIJob", _REPLICA_SPECS.format("mpiReplicaSpecs")
        ),
        "xgboostjobs.kubeflow.org": _pods(
            _KUBEFLOW, "XGBoostJob", _REPLICA_SPECS.format("xgbReplicaSpecs")
        ),
        "paddlejobs.kubeflow.org": _pods(
            _KUBEFLOW, "PaddleJob", _REPLICA_SPECS.format("paddleReplicaSpecs")
        ),
        "jaxjobs.kubeflow.org": _pods(
            _KUBEFLOW, "JAXJob", _REPLICA_SPECS.format("jaxReplicaSpecs")
        ),
        "trainjobs.trainer.kubeflow.org": _pods(
            "trainer.kubeflow.org",
            "TrainJob",
            "/spec/podSpecOverrides/*",
            "/spec/podTemplateOverrides/*/spec",
            "/spec/runtimePatches/*/trainingRuntimeSpec/template/spec/replicatedJobs/*"
            "/template/spec/template/spec",
        ),
        "rollouts.argoproj.io": _pods("argoproj.io", "Rollout", "/spec/template/spec"),
        "jobs.batch.volcano.sh": _pods("batch.volcano.sh", "Job", "/spec/tasks/*/template/spec"),
    }
)
"""The shipped defaults by resource name (``<plural>.<group>``), in the order docs list them."""


def plural(name: str) -> str:
    """The resource (plural) of a default's name: ``rayjobs`` of ``rayjobs.ray.io``."""
    return name.partition(".")[0]
