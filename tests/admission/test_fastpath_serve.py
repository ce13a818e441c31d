"""The fast path answers kitpin's own reviews, and leaves anything unexpected to kopf."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from controller import metrics
from controller.admission import decide, fastpath, pinning, webhook
from tests.admission import reviews
from tests.admission.reviews import PIN


class FakeEngine:
    """Decides by the pod name: ``deny-*`` is denied, ``warn-*`` warned, ``boom-*`` fails,
    others pinned."""

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
        if name.startswith("boom-"):
            raise RuntimeError("the registry is on fire")
        return pinning.Decision(reason="Pinned", values={"/spec/initContainers/0/env/0/value": PIN})


def review(name: str, **request: Any) -> dict[str, Any]:
    return reviews.review(reviews.pod(name), **request)


@pytest.fixture
def fast() -> tuple[fastpath.FastPath, FakeEngine]:
    engine = FakeEngine()
    admission = decide.Admission(engine, metrics=metrics.Metrics())  # type: ignore[arg-type]
    return fastpath.FastPath(admission, webhook.routes(webhook.BUILTIN_RESOURCES)), engine


async def test_pin_answers_with_a_json_patch(fast: tuple[fastpath.FastPath, FakeEngine]) -> None:
    path, engine = fast
    answer = await path.serve(review("p"), "pin-pods", {})
    assert answer is not None
    response = answer["response"]
    assert (response["uid"], response["allowed"], response.get("patchType")) == (
        "u-1",
        True,
        "JSONPatch",
    )
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops == [{"op": "replace", "path": "/spec/initContainers/0/env/0/value", "value": PIN}]
    assert engine.reviews[0].namespace == "ns" and engine.reviews[0].operation == "CREATE"


async def test_denials_and_warnings_as_kopf_answers_them(
    fast: tuple[fastpath.FastPath, FakeEngine],
) -> None:
    path, _ = fast
    denied = await path.serve(review("deny-p"), "check-pods", {})
    assert denied is not None
    assert denied["response"]["allowed"] is False
    assert denied["response"].get("status") == {"message": "no such tag", "code": 403}
    warned = await path.serve(review("warn-p"), "check-pods", {})
    assert warned is not None and warned["response"].get("warnings") == ["careful"]
    assert "patch" not in warned["response"]


async def test_an_unexpected_error_is_a_500_as_kopf_answers_it(
    fast: tuple[fastpath.FastPath, FakeEngine],
) -> None:
    path, _ = fast
    answer = await path.serve(review("boom-p"), "pin-pods", {})
    assert answer is not None
    assert answer["response"] == {
        "uid": "u-1",
        "allowed": False,
        "status": {"message": "the registry is on fire", "code": 500},
    }


async def test_the_namespace_and_policies_come_from_the_indexes(
    fast: tuple[fastpath.FastPath, FakeEngine],
) -> None:
    path, engine = fast
    indexes = {
        "kitpin_namespace_labels": {"ns": [{"kitpin.dev/ignore": "true", "team": "a"}]},
        "kitpin_cluster_policies": {"c": ["cluster-policy"]},
        "kitpin_namespaced_policies": {"n1": ["ns-policy-1"], "n2": ["ns-policy-2"]},
    }
    assert await path.serve(review("p"), "pin-pods", indexes) is not None
    seen = engine.reviews[0]
    assert seen.namespace_ignored is True
    assert seen.namespace_labels == {"kitpin.dev/ignore": "true", "team": "a"}
    assert list(seen.policies) == ["cluster-policy", "ns-policy-1", "ns-policy-2"]


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
    fast: tuple[fastpath.FastPath, FakeEngine], webhook_id: str, change: dict[str, Any]
) -> None:
    path, engine = fast
    assert await path.serve(review("p", **change), webhook_id, {}) is None
    assert engine.reviews == []
