"""AdmissionReview requests for the admission tests: a Pod with two kitops-init containers."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

PIN = "r/a:1@sha256:" + "a" * 64
POINTER = "/spec/initContainers/0/env/0/value"
"""Where the first container's reference is (``r/a:1``)."""

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


def pod(name: str = "p", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A copy of :data:`POD` named ``name``, with ``annotations`` when given."""
    obj = copy.deepcopy(POD)
    obj["metadata"]["name"] = name
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    return obj


def review(obj: Mapping[str, Any] | None = None, **request: Any) -> dict[str, Any]:
    """A CREATE review of ``obj`` (default :func:`pod`) as the apiserver sends it to
    ``/pin-pods``; ``request`` replaces fields of its ``request``."""
    payload: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "ns",
        "userInfo": {"username": "alice"},
        "object": pod() if obj is None else obj,
    }
    payload.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": payload}
