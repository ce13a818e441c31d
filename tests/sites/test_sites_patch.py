"""sites.json_patch builds RFC 6902 patches from pointers; sites.patch applies them as
the reference implementation (jsonpatch) does, copy-on-write."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from controller import sites

OBJ: dict[str, Any] = {
    "metadata": {"name": "p", "annotations": {"a/b": "1", "k": "v"}},
    "spec": {"args": ["pull", "r/m:1"], "env": [{"name": "MODELKIT_REF", "value": "r/m:1"}]},
}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/spec/args/1", "value": "r/m:1@sha256:x"}],
        [{"op": "replace", "path": "/spec/env/0/value", "value": "v2"}],
        [{"op": "add", "path": "/metadata/annotations/new", "value": "n"}],
        [{"op": "add", "path": "/metadata/annotations/k", "value": "replaced"}],
        [{"op": "remove", "path": "/metadata/annotations/a~1b"}],
        [{"op": "add", "path": "/spec/args/0", "value": "--plain-http"}],
        [{"op": "add", "path": "/spec/args/2", "value": "-d"}],
        [{"op": "add", "path": "/spec/args/-", "value": "/models"}],
        [{"op": "remove", "path": "/spec/args/0"}],
        [
            {"op": "add", "path": "/status", "value": {}},
            {"op": "add", "path": "/status/x", "value": {"y": "z"}},
            {"op": "add", "path": "/status/x/w", "value": "1"},
        ],
    ],
)
def test_patch_as_jsonpatch_does_and_leaves_the_input_alone(ops: list[Any]) -> None:
    before = copy.deepcopy(OBJ)
    ops_before = copy.deepcopy(ops)
    assert sites.patch(OBJ, ops) == jsonpatch.apply_patch(OBJ, ops)
    assert OBJ == before and ops == ops_before


def test_patch_copies_only_the_changed_branches() -> None:
    new = sites.patch(OBJ, [{"op": "replace", "path": "/spec/args/1", "value": "x"}])
    assert new["metadata"] is OBJ["metadata"]
    assert new["spec"]["env"] is OBJ["spec"]["env"]
    assert new["spec"]["args"] is not OBJ["spec"]["args"]


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/metadata/missing", "value": "x"},
        {"op": "remove", "path": "/metadata/annotations/nope"},
        {"op": "replace", "path": "/spec/args/2", "value": "x"},
        {"op": "add", "path": "/spec/args/3", "value": "x"},
        {"op": "add", "path": "/nowhere/at/all", "value": "x"},
        {"op": "replace", "path": "", "value": {}},
    ],
)
def test_patch_of_a_missing_target_is_a_lookup_error(op: Any) -> None:
    with pytest.raises(LookupError):
        sites.patch(OBJ, [op])


def test_json_patch_escapes_annotation_keys_once() -> None:
    ops = sites.json_patch(OBJ, values={}, annotations={"x/y~z": "1", "a/b": None})
    assert ops == [
        {"op": "add", "path": "/metadata/annotations/x~1y~0z", "value": "1"},
        {"op": "remove", "path": "/metadata/annotations/a~1b"},
    ]
    assert sites.get(sites.patch(OBJ, ops), "/metadata/annotations/x~1y~0z") == "1"


def test_json_patch_of_nothing_is_empty() -> None:
    assert sites.json_patch(OBJ, values={}, annotations={}) == []
    assert sites.json_patch(OBJ, values={}, annotations={"k": "v", "gone": None}) == []
