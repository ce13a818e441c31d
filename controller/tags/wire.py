"""The wire form of ModelKitTag records, pure: the object to create, ``status`` to and from
JSON, and a stored object read back as a :class:`~controller.tags.model.TagRecord`.

A create cannot set ``status`` (the apiserver ignores it on a resource with a status
subresource), so the first sighting rides in the :data:`FIRST_SEEN_ANNOTATION`; a record read
without a status starts from it. Readers never trust: malformed entries are skipped.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from controller import types
from controller.tags import model

__all__ = [
    "FIRST_SEEN_ANNOTATION",
    "MANAGED_BY",
    "new_object",
    "record_from_object",
    "status_from_wire",
    "status_to_wire",
]

FIRST_SEEN_ANNOTATION: Final = "kitpin.dev/first-seen"
"""Set by the create: ``{"digest", "time", "seenBy"}`` of the sighting that created the
record. The create is atomic, so the replica whose create won also decided ``firstSeen``,
whoever writes the status first."""

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "kitpin"}


def new_object(key: model.TagKey, first: model.Resolved) -> dict[str, Any]:
    """The ``ModelKitTag`` to create for a tag first seen by ``first``. The first sighting
    rides in :data:`FIRST_SEEN_ANNOTATION` (the apiserver drops ``status`` on create)."""
    seen = {"digest": first.digest, "time": types.rfc3339(first.at), "seenBy": first.seen_by}
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": key.name,
            "labels": dict(MANAGED_BY),
            "annotations": {
                FIRST_SEEN_ANNOTATION: json.dumps(seen, sort_keys=True, separators=(",", ":"))
            },
        },
        "spec": {"registry": key.registry, "repository": key.repository, "tag": key.tag},
    }


def status_to_wire(status: model.TagStatus, key: model.TagKey) -> dict[str, Any]:
    """The ``status`` object (every field, so a merge patch of it replaces the stored one)."""
    return {
        "reference": key.reference,
        "currentDigest": status.current_digest,
        "shortDigest": model.short_digest(status.current_digest),
        "firstSeen": {
            "digest": status.first_digest,
            "time": types.rfc3339(status.first_seen),
            "seenBy": status.first_seen_by,
        },
        "lastResolved": types.rfc3339(status.last_resolved),
        "lastChecked": _time_or_none(status.last_checked),
        "moves": status.moves,
        "lastMoved": _time_or_none(status.last_moved),
        "inUse": status.in_use,
        "history": [
            {
                "from": m.from_digest,
                "to": m.to_digest,
                "at": types.rfc3339(m.at),
                "seenBy": m.seen_by,
            }
            for m in status.history
        ],
        "digests": [_use_to_wire(u) for u in status.digests],
        "conditions": [
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message[:32768],
                "lastTransitionTime": types.rfc3339(c.last_transition),
            }
            for c in status.conditions
        ],
    }


def _time_or_none(when: datetime | None) -> str | None:
    return None if when is None else types.rfc3339(when)


def _use_to_wire(use: model.DigestUse) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "digest": use.digest,
        "firstSeen": types.rfc3339(use.first_seen),
        "lastSeen": types.rfc3339(use.last_seen),
        "workloadCount": use.workload_count,
        "workloads": [
            {"apiVersion": w.api_version, "kind": w.kind, "namespace": w.namespace, "name": w.name}
            for w in use.workloads
        ],
    }
    if use.missing_since is not None:
        wire["missingSince"] = types.rfc3339(use.missing_since)
    return wire


# Every replica keeps every record it knows (10,000 tags: 10,000 statuses), so what a record
# repeats is shared rather than decoded again: a timestamp appears in a record several times
# (first seen, last resolved, a digest's first and last sighting, a condition's transition)
# and many records share one; a digest appears as first, current, a digest in use and in the
# history; hosts, repositories, kinds, namespaces and the fixed condition texts repeat across
# records. bench/results/tags/: ~1.2 KiB per record before, see bench/README.md for after.


def _time(value: object) -> datetime | None:
    return _parse_time(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)
def _parse_time(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _shared(value: object) -> str | None:
    """:func:`_str`, one object per distinct text (interned)."""
    return sys.intern(value) if isinstance(value, str) and value else None


def _text(value: object) -> str:
    return sys.intern(str(value)) if value else ""


def _seen_by(value: object) -> model.SeenBy:
    return "watch" if value == "watch" else "admission"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def status_from_wire(wire: Mapping[str, Any]) -> model.TagStatus | None:
    """:class:`model.TagStatus` from a stored ``status``; None without ``firstSeen`` and
    ``currentDigest``. Malformed entries are skipped (only kitpin writes, but a reader never
    trusts)."""
    first = _mapping(wire.get("firstSeen"))
    first_digest, first_seen = _shared(first.get("digest")), _time(first.get("time"))
    current = _shared(wire.get("currentDigest"))
    last_resolved = _time(wire.get("lastResolved"))
    if first_digest is None or first_seen is None or current is None:
        return None
    moves = wire.get("moves")
    history = []
    for m in _items(wire.get("history")):
        src, dst, at = _shared(m.get("from")), _shared(m.get("to")), _time(m.get("at"))
        if src and dst and at:
            history.append(
                model.Move(from_digest=src, to_digest=dst, at=at, seen_by=_seen_by(m.get("seenBy")))
            )
    uses = []
    for u in _items(wire.get("digests")):
        digest, seen, last = (
            _shared(u.get("digest")),
            _time(u.get("firstSeen")),
            _time(u.get("lastSeen")),
        )
        if not (digest and seen and last):
            continue
        workloads = tuple(
            model.Workload(
                api_version=_text(w.get("apiVersion")),
                kind=_text(w["kind"]),
                namespace=_text(w["namespace"]),
                name=str(w["name"]),
            )
            for w in _items(u.get("workloads"))
            if _str(w.get("kind")) and _str(w.get("namespace")) and _str(w.get("name"))
        )[: model.WORKLOADS_LISTED]
        count = u.get("workloadCount")
        uses.append(
            model.DigestUse(
                digest=digest,
                first_seen=seen,
                last_seen=last,
                workloads=workloads,
                unlisted=max(0, count - len(workloads)) if types.is_int(count) else 0,
                missing_since=_time(u.get("missingSince")),
            )
        )
    conditions = []
    for c in _items(wire.get("conditions")):
        type_, status, at = _str(c.get("type")), c.get("status"), _time(c.get("lastTransitionTime"))
        if type_ in model.ConditionType.ALL and status in ("True", "False") and at is not None:
            conditions.append(
                model.Condition(
                    type=type_,
                    status="True" if status == "True" else "False",
                    reason=_text(c.get("reason")),
                    message=_text(c.get("message")),
                    last_transition=at,
                )
            )
    return model.TagStatus(
        first_digest=first_digest,
        first_seen=first_seen,
        first_seen_by=_seen_by(first.get("seenBy")),
        current_digest=current,
        last_resolved=last_resolved or first_seen,
        last_checked=_time(wire.get("lastChecked")),
        moves=moves if types.is_int(moves) and moves >= 0 else len(history),
        last_moved=_time(wire.get("lastMoved")),
        history=tuple(history[: model.HISTORY_KEPT]),
        digests=tuple(uses),
        conditions=tuple(conditions),
    )


def record_from_object(body: Mapping[str, Any]) -> model.TagRecord | None:
    """The :class:`model.TagRecord` of a stored ``ModelKitTag``; None when its spec names no tag.
    Without a stored status, the status is the create's first sighting
    (:data:`FIRST_SEEN_ANNOTATION`)."""
    spec, meta = _mapping(body.get("spec")), _mapping(body.get("metadata"))
    registry, repository, tag = (
        _shared(spec.get("registry")),
        _shared(spec.get("repository")),
        _str(spec.get("tag")),
    )
    name = _str(meta.get("name"))
    if not (registry and repository and tag and name):
        return None
    key = model.TagKey(registry=registry, repository=repository, tag=tag)
    status = status_from_wire(_mapping(body.get("status")))
    written = status is not None
    if status is None:
        seed = _first_seen_annotation(meta)
        status = None if seed is None else model.initial(seed)
    return model.TagRecord(
        key=key,
        name=name,
        resource_version=_str(meta.get("resourceVersion")),
        status=status,
        status_written=written,
    )


def _first_seen_annotation(meta: Mapping[str, Any]) -> model.Resolved | None:
    text = _mapping(meta.get("annotations")).get(FIRST_SEEN_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        seen = json.loads(text)
    except ValueError:
        return None
    if not isinstance(seen, Mapping):
        return None
    digest, at = _str(seen.get("digest")), _time(seen.get("time"))
    if digest is None or at is None:
        return None
    return model.Resolved(digest=digest, at=at, seen_by=_seen_by(seen.get("seenBy")))
