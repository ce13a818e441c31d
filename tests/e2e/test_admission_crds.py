"""Custom resources: KServe InferenceService ``kit://`` storage URIs, and a platform team's
own CRD declared as an extra site in kitpin's settings (no code for it in kitpin)."""

from __future__ import annotations

from typing import Any

import pytest

from harness import modelkit
from tests.e2e.conftest import (
    EXTRA_GROUP,
    EXTRA_KIND,
    EXTRA_VERSION,
    Kitpin,
    at,
    pinned_ref,
    pins,
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
