"""kitpin's records on the objects it admits: two annotations. Pure, no I/O.

``kitpin.dev/pinned`` (:data:`PINNED_ANNOTATION`)
    a JSON object mapping each pinned site's JSON pointer to
    ``{"from": <the value the user wrote>, "digest": <sha256:...>, "resolvedAt": <RFC 3339>}``,
    plus ``"signedBy": <key names>`` when a policy's ``signatures`` block verified the digest
    before it was pinned (the ``name`` of each key that did, ``release`` or ``release, ci``).
    The mutating webhook writes it; the mutating webhook (to keep a record on UPDATE) and
    :mod:`controller.admission.evidence` (what policy judges) read it.
``kitpin.dev/unpinned`` (:data:`UNPINNED_ANNOTATION`)
    with ``failure: warn``, the sites admitted unpinned: ``{"from", "reason"}`` by pointer.

Annotations are user-writable: a reader never trusts a record beyond what the object itself
shows (see :func:`controller.admission.evidence.as_written`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from controller import jsonlimits, types

PINNED_ANNOTATION: Final = "kitpin.dev/pinned"
UNPINNED_ANNOTATION: Final = "kitpin.dev/unpinned"

Record = dict[str, str]
"""One site's ``kitpin.dev/pinned`` record: ``from``, ``digest``, ``resolvedAt`` and, when a
signature was verified, ``signedBy``."""

SIGNED_BY: Final = "signedBy"
"""The record's field naming the keys that verified the pinned digest's signature."""


def record(
    original: str, digest: str, resolved_at: datetime | None, *, signed_by: str | None = None
) -> Record:
    """The record of a site whose value ``original`` kitpin pinned to ``digest``; ``signed_by``:
    the names of the keys whose signature of ``digest`` verified (policy ``signatures``)."""
    entry = {
        "from": original,
        "digest": digest,
        "resolvedAt": types.rfc3339(resolved_at or datetime.now(UTC)),
    }
    if signed_by:
        entry[SIGNED_BY] = signed_by
    return entry


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's annotations (empty when it has none, or they are not a mapping)."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return {}
    found = meta.get("annotations")
    return found if isinstance(found, Mapping) else {}


def read(obj: Mapping[str, Any]) -> dict[str, Record]:
    """The ``kitpin.dev/pinned`` records of an object, by JSON pointer; an unreadable
    annotation counts as none (it is ours to rewrite)."""
    text = annotations_of(obj).get(PINNED_ANNOTATION)
    if not isinstance(text, str):
        return {}
    try:
        data = jsonlimits.loads(text)  # depth- and size-bounded: the text is user-written
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: {kk: vv for kk, vv in v.items() if isinstance(vv, str)}
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, dict)
    }
