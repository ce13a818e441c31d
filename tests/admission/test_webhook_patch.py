"""The JSON patch of an answer changes the object exactly as kopf's own patch would: kopf
diffs the whole object before/after its merge-patch (annotations) and patch functions
(pinned values); kitpin builds the patch from the decision's pointers."""

from __future__ import annotations

import functools
from typing import Any

import jsonpatch
import pytest
from kopf._cogs.structs import bodies, patches

from controller import sites
from controller.admission import pinning, response, webhook
from tests.admission import reviews
from tests.admission.reviews import PIN


def _apply_values(body: dict[str, Any], *, values: dict[str, str]) -> None:
    new = sites.apply(body, values)
    body.clear()
    body.update(new)


def kopf_reference_patch(obj: dict[str, Any], decision: pinning.Decision) -> list[Any]:
    """What kopf computes when told the changes its own way: values by a patch function,
    annotations by merge-patch (None removes)."""
    patch = patches.Patch(body=bodies.Body(obj))
    if decision.values:
        patch.fns.append(functools.partial(_apply_values, values=dict(decision.values)))
    for key, value in decision.annotations.items():
        patch.metadata.annotations[key] = value
    return list(patch.as_json_patch())


def kopf_handler_patch(obj: dict[str, Any], decision: pinning.Decision) -> list[Any]:
    """What kopf computes from what kitpin's kopf handler tells it (the built answer)."""
    patch = patches.Patch(body=bodies.Body(obj))
    payload = response.answer(decision, obj=obj, mutating=True)
    webhook._tell_kopf(payload, warnings=[], patch=patch)
    return list(patch.as_json_patch())


with_annotations = functools.partial(reviews.pod, "p")
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
    ours = sites.json_patch(obj, values=values, annotations=annotations)
    for theirs in (kopf_reference_patch(obj, decision), kopf_handler_patch(obj, decision)):
        assert jsonpatch.apply_patch(obj, ours) == jsonpatch.apply_patch(obj, theirs)
        assert bool(ours) == bool(theirs)
    assert sites.patch(obj, ours) == jsonpatch.apply_patch(obj, ours)
