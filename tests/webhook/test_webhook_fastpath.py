"""The fast path answers what kopf's generic path answered, at a fraction of the cost."""

from __future__ import annotations

import base64
import copy
import functools
import json
from typing import Any

import jsonpatch
import pytest
from kopf._cogs.structs import bodies, patches

from controller.admission import pinning, webhook

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {
        "initContainers": [
            {"name": "a", "image": "x", "env": [{"name": "MODELKIT_REF", "value": "r/a:1"}]},
            {"name": "b", "image": "x", "env": [{"name": "MODELKIT_REF", "value": "r/b:1"}]},
        ],
        "containers": [{"name": "c", "image": "y"}],
    },
}


def kopf_patch(obj: dict[str, Any], decision: pinning.Decision) -> list[dict[str, Any]]:
    """What the kopf handler (webhook.register's mutate) made kopf compute."""
    patch = patches.Patch(body=bodies.Body(obj))
    if decision.values:
        patch.fns.append(functools.partial(webhook._apply_values, values=dict(decision.values)))
    for key, value in decision.annotations.items():
        patch.metadata.annotations[key] = value
    return list(patch.as_json_patch())


def with_annotations(ann: dict[str, str] | None) -> dict[str, Any]:
    obj = copy.deepcopy(POD)
    if ann is not None:
        obj["metadata"]["annotations"] = ann
    return obj


PIN = "r/a:1@sha256:" + "a" * 64
CASES = [
    (
        with_annotations(None),
        {"/spec/initContainers/0/env/0/value": PIN},
        {"kitpin.dev/pinned": "{}"},
    ),
    (
        with_annotations({}),
        {"/spec/initContainers/0/env/0/value": PIN},
        {"kitpin.dev/pinned": "{}"},
    ),
    (
        with_annotations({"kitpin.dev/pinned": "old", "x/y~z": "1"}),
        {},
        {"kitpin.dev/pinned": "new", "x/y~z": None},
    ),
    (with_annotations({"kitpin.dev/unpinned": "u"}), {}, {"kitpin.dev/unpinned": None, "a/b": "c"}),
    (with_annotations(None), {}, {"kitpin.dev/unpinned": None}),
    (with_annotations({"k": "same"}), {}, {"k": "same"}),
    (
        with_annotations(None),
        {"/spec/initContainers/0/env/0/value": PIN, "/spec/initContainers/1/env/0/value": PIN},
        {},
    ),
]


@pytest.mark.parametrize(("obj", "values", "annotations"), CASES)
def test_same_result_as_kopf(
    obj: dict[str, Any], values: dict[str, str], annotations: dict[str, str | None]
) -> None:
    decision = pinning.Decision(reason="Pinned", values=values, annotations=annotations)
    ours = webhook.json_patch(obj, decision)
    theirs = kopf_patch(obj, decision)
    assert jsonpatch.apply_patch(obj, ours) == jsonpatch.apply_patch(obj, theirs)
    assert bool(ours) == bool(theirs)


class FakeEngine:
    """Decides by the pod name: ``deny-*`` is denied, ``warn-*`` warned, others pinned."""

    def __init__(self) -> None:
        self.reviews: list[pinning.Review] = []

    async def mutate(self, review: pinning.Review) -> pinning.Decision:
        return self._decide(review)

    async def validate(self, review: pinning.Review) -> pinning.Decision:
        return self._decide(review)

    def _decide(self, review: pinning.Review) -> pinning.Decision:
        self.reviews.append(review)
        name = review.obj["metadata"]["name"]
        if name.startswith("deny-"):
            return pinning.Decision(
                reason="NotFound", denial=pinning.Denial(reason="NotFound", message="no such tag")
            )
        if name.startswith("warn-"):
            return pinning.Decision(reason="Pinned", warnings=("careful",))
        return pinning.Decision(reason="Pinned", values={"/spec/initContainers/0/env/0/value": PIN})


def review(name: str, **request: Any) -> dict[str, Any]:
    obj = copy.deepcopy(POD)
    obj["metadata"]["name"] = name
    payload: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "ns",
        "userInfo": {"username": "alice"},
        "object": obj,
    }
    payload.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": payload}


@pytest.fixture
def fast() -> tuple[webhook.FastPath, FakeEngine]:
    from controller import metrics

    engine = FakeEngine()
    admission = webhook.Admission(engine, metrics=metrics.Metrics())  # type: ignore[arg-type]
    return webhook.FastPath(admission, webhook.BUILTIN_RESOURCES), engine


async def test_pin_answers_with_a_json_patch(fast: tuple[webhook.FastPath, FakeEngine]) -> None:
    path, engine = fast
    answer = await path.serve(review("p"), "pin-pods", {})
    assert answer is not None
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (
        "u-1",
        True,
        "JSONPatch",
    )
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops == [{"op": "replace", "path": "/spec/initContainers/0/env/0/value", "value": PIN}]
    assert engine.reviews[0].namespace == "ns" and engine.reviews[0].operation == "CREATE"


async def test_denials_and_warnings_as_kopf_answers_them(
    fast: tuple[webhook.FastPath, FakeEngine],
) -> None:
    path, _ = fast
    denied = await path.serve(review("deny-p"), "check-pods", {})
    assert denied is not None
    assert denied["response"]["allowed"] is False
    assert denied["response"]["status"] == {"message": "no such tag", "code": 403}
    warned = await path.serve(review("warn-p"), "check-pods", {})
    assert warned is not None and warned["response"]["warnings"] == ["careful"]
    assert "patch" not in warned["response"]


@pytest.mark.parametrize(
    ("webhook_id", "change"),
    [
        ("unknown-id", {}),
        ("pin-pods", {"resource": {"group": "apps", "version": "v1", "resource": "deployments"}}),
        ("pin-pods", {"subResource": "status"}),
        ("pin-pods", {"operation": "DELETE"}),
        ("pin-pods", {"userInfo": None}),
        ("pin-pods-ephemeralcontainers", {"operation": "CREATE"}),
    ],
)
async def test_anything_unexpected_is_left_to_kopf(
    fast: tuple[webhook.FastPath, FakeEngine], webhook_id: str, change: dict[str, Any]
) -> None:
    path, engine = fast
    assert await path.serve(review("p", **change), webhook_id, {}) is None
    assert engine.reviews == []
