"""The fast path and kopf's path answer the same reviews the same way: the same engine
decision through the one answer builder, served by kitpin's FastPath and by the handlers
``webhook.register`` gives kopf (run in kopf's real admission machinery)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import jsonpatch
import kopf
import pytest
from kopf._cogs.structs import references

from controller import metrics, sites
from controller.admission import decide, fastpath, kopfcompat, pinning, response, webhook
from tests.admission import kopf_running
from tests.admission.reviews import PIN, POINTER, pod, review

DEPLOYMENTS = references.Resource(
    group="apps", version="v1", plural="deployments", kind="Deployment", namespaced=True
)


DECISIONS: dict[str, pinning.Decision] = {
    "pin": pinning.Decision(reason="Pinned", values={POINTER: PIN}),
    "pin-and-annotate": pinning.Decision(
        reason="Pinned",
        values={POINTER: PIN},
        annotations={"kitpin.dev/pinned": "{}", "kitpin.dev/unpinned": None},
        warnings=("pinned, mind you",),
    ),
    "remove-absent": pinning.Decision(reason="Kept", annotations={"kitpin.dev/unpinned": None}),
    "annotate-only": pinning.Decision(reason="Kept", annotations={"a/b~c": "1", "k": None}),
    "warn": pinning.Decision(reason="Pinned", warnings=("careful", "twice")),
    "deny": pinning.Decision(
        reason="NotFound",
        denial=pinning.Denial(reason="NotFound", message="no such tag", code=404),
        warnings=("also this",),
    ),
    "allow": pinning.Decision(reason="Skipped"),
}


class Engine:
    """Decides by the object's name (DECISIONS); ``boom`` fails unexpectedly."""

    async def mutate(self, review: pinning.Review) -> pinning.Decision:
        return self._decide(review)

    async def validate(self, review: pinning.Review) -> pinning.Decision:
        return self._decide(review)

    def _decide(self, review: pinning.Review) -> pinning.Decision:
        name = review.obj["metadata"]["name"]
        if name == "boom":
            raise RuntimeError("the registry is on fire")
        return DECISIONS[name]


Paths = tuple[fastpath.FastPath, Any]


@pytest.fixture
async def paths() -> AsyncIterator[Paths]:
    admission = decide.Admission(Engine(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    registry = kopf.OperatorRegistry()
    webhook.register(registry, admission, resources=webhook.BUILTIN_RESOURCES)
    fast = fastpath.FastPath(admission, webhook.routes(webhook.BUILTIN_RESOURCES))
    async with kopf_running.webhook_fn(registry, (kopf_running.POD, DEPLOYMENTS)) as fn:
        yield fast, fn


def patched(obj: Mapping[str, Any], payload: Mapping[str, Any]) -> Any:
    """The object as the apiserver would store it after applying the answer's patch."""
    if "patch" not in payload:
        return obj
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(payload["patch"])))


CASES = [
    pod("pin"),
    pod("pin-and-annotate"),
    pod("pin-and-annotate", {"kitpin.dev/unpinned": "{}", "x": "y"}),
    pod("remove-absent"),
    pod("remove-absent", {}),
    pod("annotate-only", {"k": "v", "a/b~c": "0"}),
    pod("warn"),
    pod("deny"),
    pod("allow"),
    pod("boom"),
]


@pytest.mark.parametrize("hook", ["pin-pods", "check-pods"])
@pytest.mark.parametrize("obj", CASES, ids=lambda o: o["metadata"]["name"])
async def test_both_paths_answer_alike(paths: Paths, obj: dict[str, Any], hook: str) -> None:
    fast, kopf_fn = paths
    data = review(obj)
    ours = await fast.serve(copy.deepcopy(data), hook, kopfcompat.indexes(kopf_fn) or {})
    theirs = await kopf_fn(copy.deepcopy(data), webhook=hook)
    assert ours is not None
    a, b = dict(ours["response"]), dict(theirs["response"])
    assert ("patch" in a) == ("patch" in b)
    assert patched(obj, a) == patched(obj, b)
    for payload in (a, b):
        payload.pop("patch", None)
    assert a == b
    assert {k: v for k, v in ours.items() if k != "response"} == {
        k: v for k, v in theirs.items() if k != "response"
    }


async def test_the_cases_cover_every_kind_of_answer(paths: Paths) -> None:
    fast, _ = paths
    seen: set[str] = set()
    for obj in CASES:
        answer = await fast.serve(review(obj), "pin-pods", {})
        assert answer is not None
        payload = answer["response"]
        seen.update(k for k in ("patch", "warnings", "status") if k in payload)
        if not payload["allowed"]:
            seen.add(f"code {payload['status']['code']}")
    assert seen == {"patch", "warnings", "status", "code 404", "code 500"}


def test_the_kopf_handler_and_the_fast_path_share_the_builder() -> None:
    obj = pod("pin-and-annotate")
    payload = response.answer(DECISIONS["pin-and-annotate"], obj=obj, mutating=True)
    assert response.patch_ops(payload) == sites.json_patch(
        obj,
        values={POINTER: PIN},
        annotations={"kitpin.dev/pinned": "{}", "kitpin.dev/unpinned": None},
    )
