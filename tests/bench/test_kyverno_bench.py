"""The side-by-side benchmark's own logic (bench/kyverno.py, bench/apiserver.py): which webhook
admitted a created Pod, and what a mutating answer wrote. A wrong answer here would count one
webhook's rounds as another's."""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from bench import apiserver, kyverno

REF = "127.0.0.1:5000/bench/llama-7b:v1"
PINNED = f"{REF}@sha256:{'a' * 64}"
SELECTED = {"kyverno": apiserver.Selected(labels={"x": "y"}, admitted=kyverno.kyverno_pinned)}


def _pod(*values: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"annotations": annotations or {}},
        "spec": {
            "initContainers": [
                {"name": f"init-{i}", "env": [{"name": "MODELKIT_REF", "value": v}]}
                for i, v in enumerate(values)
            ]
        },
    }


def test_a_pod_is_counted_for_the_webhook_that_admitted_it() -> None:
    assert apiserver._mode_of(_pod(REF), SELECTED) == "without"
    assert apiserver._mode_of(_pod(PINNED, PINNED), SELECTED) == "kyverno"
    # one reference left as written: not Kyverno's work (it pins every one)
    assert apiserver._mode_of(_pod(PINNED, REF), SELECTED) == "without"
    # kitpin's annotation wins: a Pod kitpin pinned also carries digests
    kitpin = _pod(PINNED, annotations={apiserver.PINNED: "{}"})
    assert apiserver._mode_of(kitpin, SELECTED) == "with"
    noop = _pod(REF, annotations={apiserver.NOOP_ANNOTATION: "1"})
    assert apiserver._mode_of(noop, SELECTED) == "noop"
    assert apiserver._mode_of(_pod(PINNED), {}) == "without"


def test_patched_values_reads_the_json_patch_of_an_answer() -> None:
    ops = [
        {"op": "replace", "path": "/spec/initContainers/0/env/0/value", "value": PINNED},
        {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
    ]
    answer = {"response": {"allowed": True, "patch": base64.b64encode(json.dumps(ops).encode())}}
    body = json.dumps(answer, default=bytes.decode).encode()

    assert kyverno.patched_values(body) == [PINNED]
    assert kyverno.patched_values(b'{"response": {"allowed": true}}') == []


def test_the_policy_pins_pods_only() -> None:
    policy = yaml.safe_load(kyverno.POLICY.read_text())

    assert policy["kind"] == "ClusterPolicy" and policy["metadata"]["name"] == kyverno.POLICY_NAME
    # Kyverno v1.19's autogen breaks a JSON6902 patch in a nested foreach (bench/README.md)
    assert (
        policy["metadata"]["annotations"]["pod-policies.kyverno.io/autogen-controllers"] == "none"
    )
    (rule,) = policy["spec"]["rules"]
    assert rule["match"]["any"][0]["resources"]["kinds"] == ["Pod"]
    (outer,) = rule["mutate"]["foreach"]
    (inner,) = outer["foreach"]
    assert inner["context"][0]["imageRegistry"]["reference"] == "{{ element.value }}"
