"""JSON pointers, apply() copy-on-write, and controller_owner()."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from controller import sites

DIGEST = "sha256:" + "ab" * 32

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: llama
  annotations: {"example.com/a~b": "x"}
spec:
  template:
    spec:
      initContainers:
        - name: kitops-init
          image: ghcr.io/kitops-ml/kitops-init:v1.7.0
          env:
            - {name: MODELKIT_REF, value: registry.example.com/ml/llama:production}
      containers:
        - name: server
          image: server:1
          env:
            - {name: MODELKIT_REF, value: registry.example.com/ml/llama:production}
      volumes:
        - name: packed
          csi:
            driver: model.csi.modelpack.org
            volumeAttributes:
              model.csi.modelpack.org/reference: ghcr.io/modelpack/qwen:latest
        - name: untouched
          configMap: {name: settings}
"""


@pytest.mark.parametrize(
    ("token", "escaped"),
    [("plain", "plain"), ("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1"), ("~1", "~01"), ("", "")],
)
def test_escape(token: str, escaped: str) -> None:
    assert sites.escape(token) == escaped
    obj = {token: "v"}
    assert sites.get(obj, "/" + escaped) == "v"


def test_get() -> None:
    obj = yaml.safe_load(DEPLOYMENT)
    assert sites.get(obj, "") is obj
    assert sites.get(obj, "/metadata/annotations/example.com~1a~0b") == "x"
    assert sites.get(obj, "/spec/template/spec/containers/0/name") == "server"


@pytest.mark.parametrize(
    "pointer",
    [
        "spec",  # no leading slash
        "/nope",
        "/spec/template/spec/containers/1",
        "/spec/template/spec/containers/01",
        "/spec/template/spec/containers/-",
        "/spec/template/spec/containers/name",
        "/metadata/name/x",
        "/metadata/annotations/example.com~2a",
    ],
)
def test_get_missing(pointer: str) -> None:
    with pytest.raises(LookupError):
        sites.get(yaml.safe_load(DEPLOYMENT), pointer)


def test_apply_returns_a_new_object_and_leaves_the_input_untouched() -> None:
    obj = yaml.safe_load(DEPLOYMENT)
    before = copy.deepcopy(obj)
    found = sites.find(obj)
    assert len(found.sites) == 3
    values = {s.path: f"{s.value.partition(':')[0]}:tag@{DIGEST}" for s in found.sites}
    new = sites.apply(obj, values)
    assert obj == before  # the input is never mutated
    assert new is not obj
    for path, value in values.items():
        assert sites.get(new, path) == value
    # copy-on-write: untouched branches are shared, changed ones are copies
    assert new["metadata"] is obj["metadata"]
    new_pod, old_pod = new["spec"]["template"]["spec"], obj["spec"]["template"]["spec"]
    assert new_pod is not old_pod
    assert new_pod["volumes"][1] is old_pod["volumes"][1]
    assert new_pod["initContainers"][0] is not old_pod["initContainers"][0]
    assert new_pod["initContainers"][0]["image"] is old_pod["initContainers"][0]["image"]
    assert new_pod["containers"][0]["image"] == "server:1"
    # everything else is equal
    reverted = sites.apply(new, {s.path: s.value for s in found.sites})
    assert reverted == before


def test_apply_same_parent_twice_copies_once() -> None:
    obj = {"a": {"b": ["x", "y"]}}
    new = sites.apply(obj, {"/a/b/0": "X", "/a/b/1": "Y"})
    assert new == {"a": {"b": ["X", "Y"]}}
    assert obj == {"a": {"b": ["x", "y"]}}


def test_apply_nothing_is_a_shallow_copy() -> None:
    obj = {"a": {"b": "c"}}
    new = sites.apply(obj, {})
    assert new == obj and new is not obj and new["a"] is obj["a"]


@pytest.mark.parametrize(
    "pointer",
    ["", "/missing", "/a", "/a/b/2", "/a/n", "/a/b/0/x", "/list/0", "/a/b/-"],
)
def test_apply_to_a_non_string_or_missing_path_is_a_lookup_error(pointer: str) -> None:
    obj: dict[str, Any] = {"a": {"b": ["x"], "n": 3}, "list": [[1]]}
    before = copy.deepcopy(obj)
    with pytest.raises(LookupError):
        sites.apply(obj, {pointer: "v"})
    assert obj == before


def test_controller_owner() -> None:
    rs = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "1"},
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "llama",
                    "uid": "2",
                    "controller": True,
                },
            ]
        }
    }
    owner = sites.controller_owner(rs)
    assert owner is not None and owner["kind"] == "Deployment"
    assert (
        sites.controller_owner({"metadata": {"ownerReferences": [{"controller": False}]}}) is None
    )
    assert sites.controller_owner({"metadata": {"ownerReferences": "junk"}}) is None
    assert sites.controller_owner({}) is None
