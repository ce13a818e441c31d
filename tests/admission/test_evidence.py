"""The one evidence step (controller/admission/evidence.py): what policy judges for each
reference, and when a ``kitpin.dev/pinned`` record may say what the user wrote."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from controller import refs, sites
from controller.admission import evidence, pins
from tests.admission.pinning_fakes import NOW, FakeResolver

DIGEST = "sha256:" + "d" * 64
OTHER_DIGEST = "sha256:" + "e" * 64
LLAMA = "reg.example.com/ml/llama:v1"
ENV = "/spec/initContainers/0/env/0/value"
STORAGE = "/spec/predictor/model/storageUri"


def pod(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {
            "initContainers": [
                {
                    "name": "kitops-init",
                    "image": "ghcr.io/kitops-ml/kitops-init:v1.7.0",
                    "env": [{"name": "MODELKIT_REF", "value": value}],
                }
            ],
            "containers": [{"name": "main", "image": "x/serve:1"}],
        },
    }


def isvc(storage_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}}
        },
    }


def recorded(obj: dict[str, Any], records: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {pins.PINNED_ANNOTATION: json.dumps(records)}
    return obj


def found(obj: Mapping[str, Any]) -> list[evidence.Found]:
    return [
        evidence.Found(site=s, ref=refs.parse(s.reference_text, grammar=s.grammar))
        for s in sites.find(obj).sites
    ]


def judged(obj: Mapping[str, Any]) -> tuple[str, str | None]:
    """The reference policy judges (as text) and ``written`` for the object's one site."""
    [e] = evidence.build(obj, found(obj))
    return str(e.reference), e.written


def test_without_a_record_the_value_is_judged() -> None:
    assert judged(pod(LLAMA)) == (LLAMA, None)
    assert judged(pod(f"{LLAMA}@{DIGEST}")) == (f"{LLAMA}@{DIGEST}", None)


def test_kitpins_own_record_gives_the_reference_as_written() -> None:
    obj = recorded(pod(f"{LLAMA}@{DIGEST}"), {ENV: pins.record(LLAMA, DIGEST, NOW)})
    assert judged(obj) == (LLAMA, LLAMA)
    [e] = evidence.build(obj, found(obj))
    assert e.reference.digest is None and e.reference.tag == "v1"


def test_the_record_keeps_the_sites_prefix() -> None:
    value = f"kit://{LLAMA}@{DIGEST}"
    obj = recorded(isvc(value), {STORAGE: pins.record(f"kit://{LLAMA}", DIGEST, NOW)})
    assert judged(obj) == (LLAMA, f"kit://{LLAMA}")


@pytest.mark.parametrize(
    ("value", "record"),
    [
        pytest.param(
            f"{LLAMA}@{DIGEST}", {"from": LLAMA, "digest": OTHER_DIGEST}, id="another-digest"
        ),
        pytest.param(LLAMA, {"from": LLAMA, "digest": DIGEST}, id="value-without-digest"),
        pytest.param(
            f"{LLAMA}@{DIGEST}",
            {"from": "reg.example.com/ml/approved:v1", "digest": DIGEST},
            id="another-repository",
        ),
        pytest.param(
            f"{LLAMA}@{DIGEST}",
            {"from": "other.example.com/ml/llama:v1", "digest": DIGEST},
            id="another-registry",
        ),
        pytest.param(
            f"{LLAMA}@{DIGEST}",
            {"from": "reg.example.com/ml/llama:v2", "digest": DIGEST},
            id="another-tag",
        ),
        pytest.param(
            f"{LLAMA}@{DIGEST}",
            {"from": f"{LLAMA}@{OTHER_DIGEST}", "digest": DIGEST},
            id="claims-a-digest",
        ),
        pytest.param(f"{LLAMA}@{DIGEST}", {"from": "Not A Ref", "digest": DIGEST}, id="invalid"),
        pytest.param(f"{LLAMA}@{DIGEST}", {"digest": DIGEST}, id="no-from"),
    ],
)
def test_a_record_that_could_not_be_kitpins_is_ignored(
    value: str, record: Mapping[str, str]
) -> None:
    assert judged(recorded(pod(value), {ENV: record})) == (value, None)


def test_a_record_without_the_sites_prefix_is_ignored() -> None:
    value = f"kit://{LLAMA}@{DIGEST}"
    obj = recorded(isvc(value), {STORAGE: {"from": LLAMA, "digest": DIGEST}})
    assert judged(obj) == (f"{LLAMA}@{DIGEST}", None)


@pytest.mark.parametrize("annotation", ["not json", "[1, 2]", json.dumps({ENV: "x"})])
def test_an_unreadable_annotation_counts_as_no_record(annotation: str) -> None:
    obj = pod(f"{LLAMA}@{DIGEST}")
    obj["metadata"]["annotations"] = {pins.PINNED_ANNOTATION: annotation}
    assert judged(obj) == (f"{LLAMA}@{DIGEST}", None)


async def test_resolutions_and_configs_are_attached_by_site() -> None:
    obj = pod(LLAMA)
    [f] = found(obj)
    resolution = await FakeResolver().resolve(f.ref)
    kitfile = {"manifestVersion": "1.0", "package": {"license": "MIT"}}
    [e] = evidence.build(obj, [f], resolutions={ENV: resolution}, configs={ENV: kitfile})
    assert e.site is f.site and e.resolution is resolution and e.config == kitfile
    [bare] = evidence.build(obj, [f], resolutions={"/elsewhere": resolution})
    assert bare.resolution is None and bare.config is None
