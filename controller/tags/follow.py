"""Roll-forward, pure: what kitpin writes into a workload that follows a tag which moved.

A workload annotated ``kitpin.dev/follow: "true"`` (:data:`FOLLOW_ANNOTATION`) asks kitpin to
re-pin it when a tag it pins moves: the drift watch (:mod:`controller.tags.watch`) replaces the
workload with :func:`plan`'s object, whose pod template then changes once and rolls out.

What changes, and only that: every site kitpin pinned (a ``kitpin.dev/pinned`` record,
:data:`PINNED_ANNOTATION`) whose record and value hold the old digest of *this* tag (the value
must name the same registry, repository and tag: another tag at the same digest is left
alone) gets the new digest, the user's spelling and tag kept (``name:tag@<new>``); its record
gets the new ``digest`` and ``resolvedAt``, plus ``rolledForwardFrom`` (the old digest) and
``rolledForwardAt``. A value the user wrote with a digest has no record: kitpin never rolls what
a person pinned.

Policies: the replacement is an UPDATE through kitpin's own webhooks, like any other. The
mutating webhook keeps a digest a site already carries and keeps its record (the record's
digest matches), so policy judges the reference *as the user wrote it* (the record's
``from``: the tag), and the validating webhook resolves the new digest and runs every rule
on it (artifact type, formats, layers, licenses, parents, ``tags.immutable`` against the
first-seen digest). A digest a policy refuses is denied by the apiserver: the workload keeps
its digest and the watch reports ``RollForwardDenied``. Tags under ``tags.immutable`` are
never rolled (the watch does not try).

Kinds: only objects whose template may change. A bare Pod's and a Job's pod template are
immutable (:data:`NOT_ROLLED`): they are told of the move (Event ``TagMoved``) but not rolled.

This module imports no kopf and does no I/O; ``PINNED_ANNOTATION`` is
:data:`controller.admission.pins.PINNED_ANNOTATION` (the admission layer sits above this one;
a test checks that the two agree).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from controller import errors, jsonlimits, refs, sites, types
from controller.tags import model

__all__ = [
    "FOLLOW_ANNOTATION",
    "NOT_ROLLED",
    "PINNED_ANNOTATION",
    "ROLLED_FORWARD_AT",
    "ROLLED_FORWARD_FROM",
    "Reason",
    "follows",
    "plan",
    "rollable",
]

FOLLOW_ANNOTATION: Final = "kitpin.dev/follow"
PINNED_ANNOTATION: Final = "kitpin.dev/pinned"
ROLLED_FORWARD_FROM: Final = "rolledForwardFrom"
ROLLED_FORWARD_AT: Final = "rolledForwardAt"

NOT_ROLLED: Final = frozenset({"Pod", "Job"})
"""Kinds whose pod template cannot change after creation."""


class Reason:
    """The Events of a roll-forward."""

    ROLLED_FORWARD: Final = "RolledForward"
    """Normal: re-pinned to the new digest (the message names both)."""
    DENIED: Final = "RollForwardDenied"
    """Warning: an admission webhook (kitpin's policies) refused the new digest."""
    FAILED: Final = "RollForwardFailed"
    """Warning: the apiserver refused the update otherwise (RBAC, validation)."""


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    found = meta.get("annotations") if isinstance(meta, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def follows(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` asks to be rolled forward (``kitpin.dev/follow: "true"``)."""
    value = _annotations(obj).get(FOLLOW_ANNOTATION)
    return isinstance(value, str) and value.strip().lower() == "true"


def rollable(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj``'s kind may have its template changed (see :data:`NOT_ROLLED`)."""
    return obj.get("kind") not in NOT_ROLLED


def _records(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    text = _annotations(obj).get(PINNED_ANNOTATION)
    if not isinstance(text, str):
        return {}
    try:
        data = jsonlimits.loads(text)  # user-writable: bounded
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: dict(v) for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}


def _names(text: str, key: model.TagKey) -> bool:
    """Whether ``text`` (a site's value without its digest) names ``key``'s tag, in either
    grammar, after an optional ``scheme://`` prefix (``kit://``, an extra site's)."""
    candidates = [text]
    scheme, sep, rest = text.partition("://")
    if sep and scheme and "/" not in scheme:
        candidates.append(rest)
    for candidate in candidates:
        for grammar in ("kit", "image"):
            try:
                ref = refs.parse(candidate, grammar=grammar)
            except errors.ReferenceError:
                continue
            if ref.digest is None and model.key_of(ref) == key:
                return True
    return False


def plan(
    obj: Mapping[str, Any], key: model.TagKey, old: str, new: str, *, at: datetime
) -> dict[str, Any] | None:
    """``obj`` re-pinned from ``old`` to ``new`` for ``key``'s tag (see the module
    docstring), or None when nothing kitpin pinned there holds ``old`` of this tag."""
    records = _records(obj)
    values: dict[str, str] = {}
    suffix = "@" + old
    for pointer, record in records.items():
        if record.get("digest") != old:
            continue
        try:
            value = sites.get(obj, pointer)
        except LookupError:
            continue
        if not isinstance(value, str) or not value.endswith(suffix):
            continue
        if not _names(value[: -len(suffix)], key):
            continue
        values[pointer] = value[: -len(old)] + new
    if not values:
        return None
    when = types.rfc3339(at)
    for pointer in values:
        records[pointer] = {
            **records[pointer],
            "digest": new,
            "resolvedAt": when,
            ROLLED_FORWARD_FROM: old,
            ROLLED_FORWARD_AT: when,
        }
    rolled = sites.apply(obj, values)
    meta = dict(rolled.get("metadata") or {})
    meta["annotations"] = {
        **_annotations(rolled),
        # as the mutating webhook writes it, so its answer changes nothing
        PINNED_ANNOTATION: json.dumps(records, sort_keys=True, separators=(",", ":")),
    }
    rolled["metadata"] = meta
    return rolled
