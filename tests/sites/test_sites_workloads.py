"""Pod-spec sites in every built-in workload kind: env, image volumes, ModelPack CSI."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from controller import refs, sites

INIT_CONTAINER = """
      initContainers:
        - name: kitops-init
          image: ghcr.io/kitops-ml/kitops-init:v1.7.0
          env:
            - name: UNPACK_PATH
              value: /models
            - name: MODELKIT_REF
              value: registry.example.com/ml/llama:production
          volumeMounts:
            - {name: models, mountPath: /models}
      containers:
        - name: server
          image: ghcr.io/ggml-org/llama.cpp:server
          args: ["-m", "/models/model.gguf"]
          volumeMounts:
            - {name: models, mountPath: /models}
      volumes:
        - name: models
          emptyDir: {}
"""


def indent(block: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line[6:] if line.strip() else line for line in block.splitlines())


def workload(api_version: str, kind: str, pod_spec_parent: str, depth: int) -> str:
    """A manifest of ``kind`` whose pod spec (at ``depth`` spaces) holds INIT_CONTAINER."""
    return (
        f"apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: llama\n  namespace: ml\n"
        f"{pod_spec_parent}\n{indent(INIT_CONTAINER, depth)}\n"
    )


DEPLOYMENT_LIKE = (
    "spec:\n  selector: {matchLabels: {app: llama}}\n  template:\n"
    "    metadata: {labels: {app: llama}}\n    spec:"
)

WORKLOADS: list[tuple[str, str, str, int, str]] = [
    ("apps/v1", "Deployment", DEPLOYMENT_LIKE, 6, "/spec/template/spec"),
    ("apps/v1", "StatefulSet", DEPLOYMENT_LIKE, 6, "/spec/template/spec"),
    ("apps/v1", "DaemonSet", DEPLOYMENT_LIKE, 6, "/spec/template/spec"),
    ("apps/v1", "ReplicaSet", DEPLOYMENT_LIKE, 6, "/spec/template/spec"),
    ("v1", "ReplicationController", DEPLOYMENT_LIKE, 6, "/spec/template/spec"),
    (
        "batch/v1",
        "Job",
        "spec:\n  backoffLimit: 2\n  template:\n    spec:",
        6,
        "/spec/template/spec",
    ),
    (
        "batch/v1",
        "CronJob",
        "spec:\n  schedule: '0 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:",
        10,
        "/spec/jobTemplate/spec/template/spec",
    ),
    ("v1", "Pod", "spec:", 2, "/spec"),
    ("v1", "PodTemplate", "template:\n  spec:", 4, "/template/spec"),
]


@pytest.mark.parametrize(
    ("api_version", "kind", "parent", "depth", "pod_path"),
    WORKLOADS,
    ids=[w[1] for w in WORKLOADS],
)
def test_kitops_init_env_in_every_workload_kind(
    api_version: str, kind: str, parent: str, depth: int, pod_path: str
) -> None:
    obj = yaml.safe_load(workload(api_version, kind, parent, depth))
    assert sites.pod_template_path(obj) == pod_path
    found = sites.find(obj, sites.SitesSettings())
    assert found.unresolvable == ()
    assert found.sites == (
        sites.Site(
            path=f"{pod_path}/initContainers/0/env/1/value",
            kind="env",
            grammar="kit",
            value="registry.example.com/ml/llama:production",
            expects_modelkit=True,
            where='initContainer "kitops-init" env MODELKIT_REF',
        ),
    )
    site = found.sites[0]
    assert sites.get(obj, site.path) == site.value
    assert site.reference_text == site.value


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"MODELKIT_REF": "reg.io/x:1"}},
        {"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {}},  # foreign group
        {"apiVersion": "apps/v1", "kind": "Deployment"},  # no spec
        {"kind": "Deployment"},
        {},
    ],
)
def test_unknown_kinds_and_empty_objects_have_no_findings(obj: dict[str, Any]) -> None:
    assert sites.find(obj) is sites.EMPTY


def test_pod_template_path_none_for_other_kinds() -> None:
    assert sites.pod_template_path({"apiVersion": "v1", "kind": "ConfigMap"}) is None
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}
    assert sites.pod_template_path(isvc) is None
    assert sites.pod_template_path({"apiVersion": 1, "kind": "Pod"}) is None


BARE_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: inference
spec:
  containers:
    - name: server
      image: vllm/vllm-openai:v0.6.0
      env:
        - {name: MODELKIT_REF, value: ""}
        - name: HF_TOKEN
          valueFrom: {secretKeyRef: {name: hf, key: token}}
      volumeMounts:
        - {name: weights, mountPath: /models/a}
        - {name: packed, mountPath: /models/b}
  volumes:
    - name: scratch
      emptyDir: {}
    - name: weights
      image:
        reference: quay.io/ml/llama-weights:v2
        pullPolicy: IfNotPresent
    - name: packed
      csi:
        driver: model.csi.modelpack.org
        volumeAttributes:
          model.csi.modelpack.org/reference: ghcr.io/modelpack/qwen/qwen3-0.6b:latest
    - name: other-csi
      csi:
        driver: secrets-store.csi.k8s.io
        volumeAttributes:
          model.csi.modelpack.org/reference: not-a-model
"""


def test_bare_pod_with_image_volume_and_modelpack_csi() -> None:
    obj = yaml.safe_load(BARE_POD)
    found = sites.find(obj)
    assert found.unresolvable == ()  # HF_TOKEN's valueFrom is not a MODELKIT_REF
    assert [(s.path, s.kind, s.grammar, s.expects_modelkit, s.where) for s in found.sites] == [
        (
            "/spec/volumes/1/image/reference",
            "image-volume",
            "image",
            False,
            'volume "weights" image.reference',
        ),
        (
            "/spec/volumes/2/csi/volumeAttributes/model.csi.modelpack.org~1reference",
            "modelpack-csi",
            "image",
            True,
            'volume "packed" csi volumeAttributes[model.csi.modelpack.org/reference]',
        ),
    ]
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value


def test_modelpack_csi_driver_name_is_configurable() -> None:
    obj = yaml.safe_load(BARE_POD)
    obj["spec"]["volumes"][2]["csi"] = {
        "driver": "models.example.com",
        "volumeAttributes": {"models.example.com/reference": "reg.example.com/m:1"},
    }
    assert [s.kind for s in sites.find(obj).sites] == ["image-volume"]
    custom = sites.SitesSettings(modelpack_csi_drivers=("models.example.com",))
    csi = [s for s in sites.find(obj, custom).sites if s.kind == "modelpack-csi"]
    assert [s.path for s in csi] == [
        "/spec/volumes/2/csi/volumeAttributes/models.example.com~1reference"
    ]


EPHEMERAL = """
apiVersion: v1
kind: Pod
metadata: {name: debug-me}
spec:
  containers:
    - {name: app, image: busybox}
  ephemeralContainers:
    - name: debugger
      image: ghcr.io/example/model-debug:1
      targetContainerName: app
      env:
        - {name: MODELKIT_REF, value: "registry.example.com/ml/llama:challenger"}
"""


def test_ephemeral_containers() -> None:
    found = sites.find(yaml.safe_load(EPHEMERAL))
    assert [(s.path, s.where) for s in found.sites] == [
        (
            "/spec/ephemeralContainers/0/env/0/value",
            'ephemeralContainer "debugger" env MODELKIT_REF',
        )
    ]


VALUE_FROM = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama}
spec:
  template:
    spec:
      initContainers:
        - name: fetch
          image: registry.example.com/platform/model-fetcher:3
          env:
            - name: MODELKIT_REF
              valueFrom:
                configMapKeyRef: {name: model, key: ref}
        - name: kitops-init
          image: ghcr.io/kitops-ml/kitops-init:v1.7.0
          envFrom:
            - configMapRef: {name: model-settings}
      containers:
        - name: server
          image: server:1
          env:
            - {name: MODELKIT_REF, value: "registry.example.com/ml/llama:v1"}
"""


def test_value_from_and_env_from_are_unresolvable() -> None:
    found = sites.find(yaml.safe_load(VALUE_FROM))
    assert [s.path for s in found.sites] == ["/spec/template/spec/containers/0/env/0/value"]
    assert [(u.path, u.where) for u in found.unresolvable] == [
        (
            "/spec/template/spec/initContainers/0/env/0/valueFrom",
            'initContainer "fetch" env MODELKIT_REF',
        ),
        (
            "/spec/template/spec/initContainers/1/envFrom",
            'initContainer "kitops-init" envFrom',
        ),
    ]
    assert "valueFrom" in found.unresolvable[0].why
    assert "envFrom" in found.unresolvable[1].why


def test_configurable_env_names() -> None:
    obj = yaml.safe_load(VALUE_FROM)
    env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "BASE_MODEL", "value": "registry.example.com/ml/base:v3"})
    env.append({"name": "ADAPTER_REF", "value": "registry.example.com/ml/lora:v1"})
    custom = sites.SitesSettings(env_names=("BASE_MODEL", "ADAPTER_REF"))
    found = sites.find(obj, custom)
    assert [(s.path, s.where) for s in found.sites] == [
        ("/spec/template/spec/containers/0/env/1/value", 'container "server" env BASE_MODEL'),
        ("/spec/template/spec/containers/0/env/2/value", 'container "server" env ADAPTER_REF'),
    ]
    # MODELKIT_REF is no longer a name kitpin watches: its valueFrom is not reported; the
    # kitops-init container fed by envFrom still is.
    assert [u.where for u in found.unresolvable] == ['initContainer "kitops-init" envFrom']


def test_duplicate_env_entries_are_all_reported() -> None:
    obj = yaml.safe_load(EPHEMERAL)
    env = obj["spec"]["ephemeralContainers"][0]["env"]
    env.append({"name": "MODELKIT_REF", "value": "registry.example.com/ml/llama:v2"})
    assert [s.path for s in sites.find(obj).sites] == [
        "/spec/ephemeralContainers/0/env/0/value",
        "/spec/ephemeralContainers/0/env/1/value",
    ]


def test_unnamed_container_is_described_by_index() -> None:
    obj = yaml.safe_load(EPHEMERAL)
    del obj["spec"]["ephemeralContainers"][0]["name"]
    assert sites.find(obj).sites[0].where == "ephemeralContainer #0 env MODELKIT_REF"


def test_custom_pod_kind() -> None:
    obj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "spec": {"template": {"spec": {"initContainers": [
            {"name": "i", "env": [{"name": "MODELKIT_REF", "value": "reg.example.com/m:1"}]}
        ]}}},
    }  # fmt: skip
    off = ("rollouts.argoproj.io",)  # a shipped default (test_sites_defaults): turned off
    assert sites.find(obj, sites.SitesSettings(disabled_defaults=off)) is sites.EMPTY
    kinds = {**sites.DEFAULT_POD_KINDS, ("argoproj.io", "Rollout"): "/spec/template/spec"}
    custom = sites.SitesSettings(pod_kinds=kinds, disabled_defaults=off)
    assert sites.pod_template_path(obj, custom) == "/spec/template/spec"
    assert [s.path for s in sites.find(obj, custom).sites] == [
        "/spec/template/spec/initContainers/0/env/0/value"
    ]
    # Both the pod kind and the shipped default: one pod spec, walked once.
    both = sites.SitesSettings(pod_kinds=kinds)
    assert sites.find(obj, both) == sites.find(obj, custom)


ALL_MANIFESTS = [workload(*w[:4]) for w in WORKLOADS] + [BARE_POD, EPHEMERAL, VALUE_FROM]


@pytest.mark.parametrize("text", ALL_MANIFESTS)
def test_every_site_parses_in_its_grammar(text: str) -> None:
    """The site's grammar is the one refs.parse accepts for these realistic values."""
    obj = yaml.safe_load(text)
    before = copy.deepcopy(obj)
    for site in sites.find(obj).sites:
        reference = refs.parse(site.reference_text, grammar=site.grammar)
        assert reference.grammar == site.grammar
    assert obj == before
