"""KServe InferenceService: kit:// storage URIs and the components' inline pod specs."""

from __future__ import annotations

import pytest
import yaml

from controller import refs, sites

ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
spec:
  predictor:
    minReplicas: 1
    model:
      modelFormat: {name: sklearn}
      storageUri: kit://registry.example.com/ml/iris:champion
      env:
        - {name: MODELKIT_REF, value: "registry.example.com/ml/iris-extra:v1"}
      resources: {limits: {cpu: "1"}}
    storageUris:
      - uri: kit://registry.example.com/ml/llama:v3
        mountPath: /mnt/models/base
      - uri: s3://bucket/adapters
        mountPath: /mnt/models/adapters
      - uri: hf://meta-llama/Llama-3-8B
    initContainers:
      - name: extra
        image: ghcr.io/kitops-ml/kitops:v1.7.0
        args: [unpack, "registry.example.com/ml/tokenizer:v1", -d, /mnt/tok]
    volumes:
      - name: tok
        image: {reference: "quay.io/ml/tokenizer:v1"}
    workerSpec:
      containers:
        - name: worker
          env: [{name: MODELKIT_REF, value: "registry.example.com/ml/shard:v1"}]
    labels:
      storageUri: kit://not-a-model
    annotations:
      storageUri: kit://not-a-model
  transformer:
    containers:
      - name: kserve-container
        image: registry.example.com/ml/transformer:1
        env: [{name: MODELKIT_REF, value: "registry.example.com/ml/vocab:v1"}]
  explainer:
    art:
      type: SquareAttack
      storageUri: kit://registry.example.com/ml/explainer:v2
"""

EXPECTED = [
    (
        "/spec/predictor/storageUris/0/uri",
        "kserve-storage-uri",
        "InferenceService predictor.storageUris[0].uri",
    ),
    (
        "/spec/predictor/model/storageUri",
        "kserve-storage-uri",
        "InferenceService predictor.model.storageUri",
    ),
    (
        "/spec/predictor/model/env/0/value",
        "env",
        "InferenceService predictor.model env MODELKIT_REF",
    ),
    (
        "/spec/predictor/initContainers/0/args/1",
        "kit-cli-args",
        'predictor initContainer "extra" args[1] (kit unpack)',
    ),
    (
        "/spec/predictor/volumes/0/image/reference",
        "image-volume",
        'predictor volume "tok" image.reference',
    ),
    (
        "/spec/predictor/workerSpec/containers/0/env/0/value",
        "env",
        'predictor workerSpec container "worker" env MODELKIT_REF',
    ),
    (
        "/spec/transformer/containers/0/env/0/value",
        "env",
        'transformer container "kserve-container" env MODELKIT_REF',
    ),
    (
        "/spec/explainer/art/storageUri",
        "kserve-storage-uri",
        "InferenceService explainer.art.storageUri",
    ),
]


def test_inference_service_sites() -> None:
    obj = yaml.safe_load(ISVC)
    found = sites.find(obj)
    assert found.unresolvable == ()
    assert [(s.path, s.kind, s.where) for s in found.sites] == EXPECTED
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value
        if site.kind == "kserve-storage-uri":
            assert (site.prefix, site.grammar, site.expects_modelkit) == ("kit://", "kit", True)
            assert site.value == "kit://" + site.reference_text
        refs.parse(site.reference_text, grammar=site.grammar)


@pytest.mark.parametrize(
    "framework", ["sklearn", "pytorch", "tensorflow", "huggingface", "xgboost", "onnx", "triton"]
)
def test_framework_storage_uri(framework: str) -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {"predictor": {framework: {"storageUri": "kit://reg.example.com/m:v1"}}},
    }
    (site,) = sites.find(obj).sites
    assert site.path == f"/spec/predictor/{framework}/storageUri"
    assert site.reference_text == "reg.example.com/m:v1"
    assert site.render("reg.example.com/m:v1@sha256:" + "0" * 64) == (
        "kit://reg.example.com/m:v1@sha256:" + "0" * 64
    )


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/model",
        "gs://bucket/model",
        "hf://meta-llama/Llama-3-8B",
        "pvc://models/llama",
        "oci://registry.example.com/modelcar:v1",  # KServe modelcar: an image, not a ModelKit
        "https://example.com/model.joblib",
        "KIT://registry.example.com/m:v1",  # KServe matches the prefix literally
        "",
    ],
)
def test_other_schemes_are_not_modelkit_sites(uri: str) -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "spec": {
            "predictor": {
                "model": {"storageUri": uri},
                "storageUris": [{"uri": uri}],
            }
        },
    }
    assert sites.find(obj) is sites.EMPTY


def test_storage_uris_as_plain_strings_are_tolerated() -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "spec": {"predictor": {"storageUris": ["kit://reg.example.com/m:v1", "s3://b/m"]}},
    }
    assert [s.path for s in sites.find(obj).sites] == ["/spec/predictor/storageUris/0"]


def test_other_kserve_kinds_are_not_read() -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "spec": {"model": {"storageUri": "kit://reg.example.com/m:v1"}},
    }
    assert sites.find(obj) is sites.EMPTY
