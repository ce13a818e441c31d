"""find() never raises on odd shapes; apply() of every found site round-trips."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import sites

KEYS = st.sampled_from(
    [
        "spec", "template", "jobTemplate", "containers", "initContainers", "ephemeralContainers",
        "env", "name", "value", "valueFrom", "envFrom", "image", "args", "command", "volumes",
        "reference", "csi", "driver", "volumeAttributes", "model.csi.modelpack.org/reference",
        "predictor", "transformer", "explainer", "model", "sklearn", "storageUri", "storageUris",
        "uri", "workerSpec", "MODELKIT_REF", "models", "source", "a/b~c",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "MODELKIT_REF",
            "kit://reg.example.com/m:1",
            "reg.example.com/m:1",
            "pull",
            "unpack",
            "-d",
            "--filter",
            "--",
            "$(X)",
            "$(MODELKIT_REF)",
            "ghcr.io/kitops-ml/kitops:1",
            "ghcr.io/kitops-ml/kitops-init:1",
            "model.csi.modelpack.org",
            "kit",
            "sh",
            "-c",
            "",
        ]
    ),
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40,
)
KINDS = st.sampled_from(
    [
        ("v1", "Pod"), ("apps/v1", "Deployment"), ("batch/v1", "CronJob"), ("v1", "PodTemplate"),
        ("serving.kserve.io/v1beta1", "InferenceService"), ("ml.example.com/v1", "ModelDeployment"),
        ("serving.kserve.io/v1alpha2", "LLMInferenceService"), ("kubeflow.org/v1", "PyTorchJob"),
        ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"), ("jobset.x-k8s.io/v1alpha2", "JobSet"),
    ]
)  # fmt: skip
EXTRA = sites.SitesSettings(
    extra_sites=(
        sites.ExtraSite(
            group="ml.example.com", kind="ModelDeployment", paths=("spec.models[*].source",)
        ),
        sites.ExtraSite(
            group="ml.example.com", kind="ModelDeployment", paths=("spec[*]", "spec.a/b~c")
        ),
        sites.ExtraSite(
            group="ml.example.com",
            kind="ModelDeployment",
            paths=("/spec/*/*", "spec.*.uri"),
            pod_specs=("/spec/*", "spec.pods[*]"),
        ),
    )
)


def shaped(kind: tuple[str, str], body: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": kind[0], "kind": kind[1]}
    if isinstance(body, dict):
        obj.update(body)
    else:
        obj["spec"] = body
    return obj


@settings(max_examples=400, deadline=None)
@given(kind=KINDS, body=JSON)
def test_find_never_raises_and_sites_point_at_their_values(
    kind: tuple[str, str], body: Any
) -> None:
    obj = shaped(kind, body)
    before = copy.deepcopy(obj)
    found = sites.find(obj, EXTRA)
    assert obj == before
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value
    new = sites.apply(obj, {s.path: s.value + "@x" for s in found.sites})
    assert obj == before
    for site in found.sites:
        assert sites.get(new, site.path) == site.value + "@x"


@settings(max_examples=200, deadline=None)
@given(obj=JSON)
def test_find_on_anything(obj: Any) -> None:
    sites.find(obj)
    sites.pod_template_path(obj)
    sites.controller_owner(obj)
    sites.is_template(obj)
    sites.pod_specs(obj, EXTRA)


@settings(max_examples=300, deadline=None)
@given(kind=KINDS, spec=st.dictionaries(KEYS, JSON, max_size=6))
def test_pod_specs_with_junk(kind: tuple[str, str], spec: dict[str, Any]) -> None:
    """Put junk exactly where the pod spec is expected, so the walkers see it."""
    pointer = sites.pod_template_path({"apiVersion": kind[0], "kind": kind[1]})
    obj: dict[str, Any] = {"apiVersion": kind[0], "kind": kind[1]}
    node = obj
    tokens = pointer.split("/")[1:] if pointer else ["spec", "predictor"]
    for token in tokens[:-1]:
        node = node.setdefault(token, {})
    node[tokens[-1]] = spec
    found = sites.find(obj, EXTRA)
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value
