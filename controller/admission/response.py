"""The one answer builder: a :class:`~controller.admission.pinning.Decision` (or a handler's
unexpected error) → the ``response`` of an AdmissionReview. No kopf here.

Both paths answer through it. The fast path sends :func:`envelope` of it as it is; kopf's
handlers cannot hand kopf a finished answer, so they tell kopf what it says: its warnings,
its status as a ``kopf.AdmissionError`` (message and code), its patch (:func:`patch_ops`)
as the change to make (see :mod:`controller.admission.webhook`). The decision → answer rule
lives here only, and tests compare the two paths' answers on the same reviews.

The rule: warnings are always passed on; a denial answers ``allowed: false`` with its message
and code, and no patch; otherwise a mutating webhook's changes (pinned values by JSON pointer,
annotations) become a base64 JSON patch built from their pointers
(:func:`controller.sites.json_patch`: no deep copy, no whole-object diff). An unexpected error
answers as kopf does: ``allowed: false``, its text, code 500.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

import orjson

from controller import sites
from controller.admission import pinning

__all__ = [
    "AdmissionReviewResponse",
    "PatchType",
    "ResponsePayload",
    "Status",
    "answer",
    "envelope",
    "failure",
    "patch_ops",
]

PatchType = Literal["JSONPatch"]


class Status(TypedDict):
    """``response.status``: why a review was not allowed."""

    message: str
    code: int


class ResponsePayload(TypedDict):
    """``response`` of an AdmissionReview (admission.k8s.io/v1)."""

    uid: str
    allowed: bool
    warnings: NotRequired[list[str]]
    status: NotRequired[Status]
    patch: NotRequired[str]
    """base64 of the JSON patch (RFC 6902)."""
    patchType: NotRequired[PatchType]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: ResponsePayload


def answer(
    decision: pinning.Decision, *, obj: Mapping[str, Any], mutating: bool, uid: str = ""
) -> ResponsePayload:
    """The answer to a review of ``obj`` (the object as it arrived) for ``decision``."""
    payload: ResponsePayload = {"uid": uid, "allowed": decision.denial is None}
    if decision.warnings:
        payload["warnings"] = [str(w) for w in decision.warnings]
    if decision.denial is not None:
        payload["status"] = {"message": decision.denial.message, "code": decision.denial.code}
    elif mutating and decision.changes:
        ops = sites.json_patch(obj, values=decision.values, annotations=decision.annotations)
        if ops:
            payload["patch"] = base64.b64encode(orjson.dumps(ops)).decode("ascii")
            payload["patchType"] = "JSONPatch"
    return payload


def failure(error: BaseException, *, uid: str = "") -> ResponsePayload:
    """The answer when deciding failed unexpectedly: what kopf answers for a handler's error."""
    return {
        "uid": uid,
        "allowed": False,
        "status": {"message": str(error) or repr(error), "code": 500},
    }


def envelope(request: Mapping[str, Any], payload: ResponsePayload) -> AdmissionReviewResponse:
    """The AdmissionReview that carries ``payload``, in the API version of ``request``."""
    return {
        "apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
        "kind": request.get("kind", "AdmissionReview"),
        "response": payload,
    }


def patch_ops(payload: ResponsePayload) -> list[sites.PatchOp]:
    """The JSON patch an answer carries, decoded ([] when none)."""
    encoded = payload.get("patch")
    if not encoded:
        return []
    return cast(list[sites.PatchOp], orjson.loads(base64.b64decode(encoded)))
