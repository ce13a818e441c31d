"""ModelKitTag records, pure: object names, the record value, and how a record's status moves.

One ``ModelKitTag`` (``kitpin.dev/v1alpha1``, cluster-scoped) per ``registry/repository:tag``
kitpin resolved. Its ``spec`` names the tag (immutable, a CEL rule in the CRD); its ``status``
remembers what the tag resolved to::

    status:
      reference: registry.example.com/org/llama:production
      currentDigest: sha256:…          shortDigest: 3f2a9c1b7e4d
      firstSeen: {digest, time, seenBy}   the first digest recorded: the truth for
                                          trust-on-first-use (``tags.immutable``)
      lastResolved, lastChecked        the newest resolution; the drift watch's newest check
      moves, lastMoved                 how often and when the tag last moved
      history: [{from, to, at, seenBy}]   newest first, the last HISTORY_KEPT moves
      digests: [{digest, firstSeen, lastSeen, missingSince?, workloadCount,
                 workloads: [{apiVersion, kind, namespace, name}]}]
                                       the digests the tag had that workloads pin (owner-level
                                       objects: Deployment, Job, InferenceService…), bounded
      inUse                            workloads pinned to any of them
      conditions: Moved, DigestMissing, ImmutableTagMoved

Every change is an :data:`Observation` applied by :func:`apply` to the current
:class:`TagStatus` (None before the first): a resolution seen by admission or by the drift watch
(:class:`Resolved`), a check that found the tag unchanged (:class:`Checked`), a workload pinned
to a digest (:class:`Pinned`) or no longer (:class:`Unpinned`), a pinned digest gone from the
registry or back (:class:`Missing`, :class:`Present`). :func:`is_news` says whether an
observation would change anything a writer must store, so a cached review writes nothing.

Rules of :func:`apply`:

- A resolution to another digest than ``currentDigest`` is a move only if it is newer than
  ``lastResolved`` (a replica's cached answer from before the move is not a move back); an
  older one only records the digest and its workload.
- A workload pins one digest of a tag: pinned to a new one, it leaves the others.
- A tag under ``tags.immutable`` (``Resolved.immutable``) whose digest differs from the
  first-seen one sets ``ImmutableTagMoved=True``; it stays True (delete the record to trust
  the new digest).
- Bounds: HISTORY_KEPT moves; DIGESTS_KEPT digests (the current one always kept; digests no
  workload pins go first, oldest first); WORKLOADS_LISTED workloads per digest, more are
  counted in ``workloadCount`` without being listed.

Callers pass ``now``; messages carry :func:`controller.types.rfc3339` timestamps (UTC,
seconds). The JSON form of all this is :mod:`controller.tags.wire`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from controller import errors, refs, types

__all__ = [
    "API_VERSION",
    "DIGESTS_KEPT",
    "GROUP",
    "HISTORY_KEPT",
    "KIND",
    "PLURAL",
    "VERSION",
    "WORKLOADS_LISTED",
    "Checked",
    "Condition",
    "ConditionType",
    "DigestUse",
    "Missing",
    "Move",
    "Observation",
    "Pinned",
    "Present",
    "Reason",
    "Resolved",
    "SeenBy",
    "TagKey",
    "TagRecord",
    "TagStatus",
    "Unpinned",
    "Workload",
    "apply",
    "apply_all",
    "coalesce_key",
    "initial",
    "is_news",
    "key_of",
    "mentions",
    "object_name",
    "reference_of",
    "short_digest",
    "workload_of",
]

GROUP: Final = "kitpin.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelKitTag"
PLURAL: Final = "modelkittags"

HISTORY_KEPT: Final = 20
DIGESTS_KEPT: Final = 10
WORKLOADS_LISTED: Final = 50
"""Workloads listed per digest; the CRD's maxItems are these."""

MAX_NAME_LENGTH: Final = 253
"""A DNS-1123 subdomain, what Kubernetes allows for the name of a cluster-scoped object."""

NAME_HASH_LENGTH: Final = 16
"""Hex digits of sha256 of the exact reference at the end of every name (64 bits): two
distinct references get distinct names even when their readable parts agree (case, ports,
truncation)."""

SHORT_DIGEST_LENGTH: Final = 12

SeenBy = Literal["admission", "watch"]
SEEN_BY: Final[tuple[SeenBy, ...]] = ("admission", "watch")

ConditionStatus = Literal["True", "False"]


class ConditionType:
    MOVED: Final = "Moved"
    DIGEST_MISSING: Final = "DigestMissing"
    IMMUTABLE_TAG_MOVED: Final = "ImmutableTagMoved"
    ALL: Final = (MOVED, DIGEST_MISSING, IMMUTABLE_TAG_MOVED)


class Reason:
    """Condition reasons; the first three are also the Events' reasons."""

    TAG_MOVED: Final = "TagMoved"
    PINNED_DIGEST_MISSING: Final = "PinnedDigestMissing"
    IMMUTABLE_TAG_MOVED: Final = "ImmutableTagMoved"
    NOT_MOVED: Final = "NotMoved"
    DIGESTS_PRESENT: Final = "PinnedDigestsPresent"
    NO_IMMUTABLE_MOVE: Final = "NoImmutableMove"


# --- names --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TagKey:
    """One tag of one repository: what a record is about (its ``spec``)."""

    registry: str
    repository: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def name(self) -> str:
        """The record's object name (:func:`object_name`)."""
        return object_name(self)

    def __str__(self) -> str:
        return self.reference


def key_of(ref: refs.Reference) -> TagKey:
    """The tag ``ref`` names (its digest, if any, is not part of it)."""
    return TagKey(registry=ref.registry, repository=ref.repository, tag=ref.tag)


_NOT_NAME_CHARS = re.compile(r"[^a-z0-9.]+")
_DOTS = re.compile(r"-*\.[-.]*")
_EDGES = "-."


@functools.lru_cache(maxsize=8192)  # every admission asks; the same tags come back
def object_name(key: TagKey) -> str:
    """A valid, deterministic object name for ``key``: a readable part (lowercase letters,
    digits, ``-`` and ``.``, cut to fit) and ``-`` plus :data:`NAME_HASH_LENGTH` hex digits
    of sha256 of the exact reference, e.g. ``registry.example.com-org-llama-production-
    3b1f0c9a2d4e5f60``. Valid as a DNS-1123 subdomain, at most 253 characters."""
    digest = hashlib.sha256(key.reference.encode("utf-8", "surrogatepass")).hexdigest()
    suffix = digest[:NAME_HASH_LENGTH]
    readable = f"{key.registry}-{key.repository}-{key.tag}".lower()
    readable = _NOT_NAME_CHARS.sub("-", readable)
    readable = _DOTS.sub(".", readable)  # a dot between two alphanumerics, never "-." or ".."
    readable = readable.strip(_EDGES)
    readable = readable[: MAX_NAME_LENGTH - NAME_HASH_LENGTH - 1].rstrip(_EDGES)
    return f"{readable}-{suffix}" if readable else suffix


def reference_of(key: TagKey) -> refs.Reference:
    """A :class:`refs.Reference` naming exactly ``key`` (kit grammar where it can, which never
    adds Docker Hub's ``library/``; image grammar for hosts only it accepts, such as
    ``localhost`` without a port). Raises :class:`errors.ReferenceError` for a key no
    reference can name (a record someone else wrote)."""
    text = key.reference
    for grammar in ("kit", "image"):
        try:
            ref = refs.parse(text, grammar=grammar)
        except errors.ReferenceError:
            continue
        if key_of(ref) == key:
            return ref
    raise errors.ReferenceError(
        f"{text!r} does not name one registry, repository and tag", text=text
    )


def short_digest(digest: str) -> str:
    """The first 12 hex digits, as ``kubectl get`` shows them."""
    return digest.partition(":")[2][:SHORT_DIGEST_LENGTH] or digest[:SHORT_DIGEST_LENGTH]


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """An owner-level object that pins a digest (Deployment, Job, InferenceService, a bare
    Pod…), not every Pod it makes."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        """``Kind/namespace/name``: one object whatever version it was read in."""
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    from_digest: str
    to_digest: str
    at: datetime
    seen_by: SeenBy


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestUse:
    """One digest the tag had, and the workloads pinned to it."""

    digest: str
    first_seen: datetime
    last_seen: datetime
    workloads: tuple[Workload, ...] = ()
    """Newest first, at most :data:`WORKLOADS_LISTED`."""
    unlisted: int = 0
    """Workloads seen pinned to it when the list was full (each counted once per writer
    that saw it, so an estimate)."""
    missing_since: datetime | None = None
    """When the drift watch found it gone from the registry (404 by digest)."""

    @property
    def workload_count(self) -> int:
        return len(self.workloads) + self.unlisted

    def lists(self, workload: Workload) -> bool:
        return any(w.key == workload.key for w in self.workloads)


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TagStatus:
    first_digest: str
    first_seen: datetime
    first_seen_by: SeenBy
    current_digest: str
    last_resolved: datetime
    last_checked: datetime | None = None
    moves: int = 0
    last_moved: datetime | None = None
    history: tuple[Move, ...] = ()
    """Newest first."""
    digests: tuple[DigestUse, ...] = ()
    conditions: tuple[Condition, ...] = ()

    @property
    def in_use(self) -> int:
        return sum(u.workload_count for u in self.digests)

    def use(self, digest: str) -> DigestUse | None:
        for u in self.digests:
            if u.digest == digest:
                return u
        return None

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions:
            if c.type == type_:
                return c
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TagRecord:
    """A stored ``ModelKitTag`` as a writer or the watch needs it."""

    key: TagKey
    name: str
    resource_version: str | None
    status: TagStatus | None
    """None only for a record without a status or first-seen annotation (not kitpin's)."""
    status_written: bool
    """Whether ``status`` came from the stored status (else from the create's annotation:
    a status patch is still due)."""


# --- observations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """The tag resolved to ``digest`` (by the registry at ``at``: a cached answer keeps the
    time the registry gave it)."""

    digest: str
    at: datetime
    seen_by: SeenBy
    workload: Workload | None = None
    """The workload admitted with it (admission), if it has a name."""
    immutable: bool = False
    """The tag is under a ``tags.immutable`` policy rule."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    """The drift watch found the tag at its current digest."""

    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Pinned:
    """``workload`` pins ``digest`` of the tag without a resolution now (a digest kept from
    the old object on UPDATE)."""

    digest: str
    workload: Workload
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpinned:
    """``workload`` no longer pins ``digest`` (None: any digest): deleted or changed."""

    workload: Workload
    digest: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Missing:
    """The registry answered 404 for ``digest`` (a HEAD by digest)."""

    digest: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Present:
    """The registry has ``digest`` (again)."""

    digest: str
    at: datetime


Observation = Resolved | Checked | Pinned | Unpinned | Missing | Present


def coalesce_key(obs: Observation) -> tuple[str, ...]:
    """Two observations with the same key bring the same news (only their times differ): a
    writer keeps one of them."""
    match obs:
        case Resolved():
            w = obs.workload.key if obs.workload else ""
            return ("resolved", obs.digest, w, obs.seen_by, str(obs.immutable))
        case Checked():
            return ("checked",)
        case Pinned():
            return ("pinned", obs.digest, obs.workload.key)
        case Unpinned():
            return ("unpinned", obs.digest or "", obs.workload.key)
        case Missing():
            return ("missing", obs.digest)
        case Present():
            return ("present", obs.digest)


# --- transitions --------------------------------------------------------------------------


def initial(obs: Resolved) -> TagStatus:
    """The status of a tag first seen by ``obs``."""
    status = TagStatus(
        first_digest=obs.digest,
        first_seen=obs.at,
        first_seen_by=obs.seen_by,
        current_digest=obs.digest,
        last_resolved=obs.at,
        last_checked=obs.at if obs.seen_by == "watch" else None,
        digests=(DigestUse(digest=obs.digest, first_seen=obs.at, last_seen=obs.at),),
    )
    if obs.workload is not None:
        status = _pin(status, obs.digest, obs.workload, obs.at)
    return _finish(status, obs.at)


def apply(status: TagStatus | None, obs: Observation, *, now: datetime) -> TagStatus | None:
    """The status after ``obs``. A record starts with a resolution: anything else observed
    of an unknown tag changes nothing (returns None)."""
    if status is None:
        return initial(obs) if isinstance(obs, Resolved) else None
    match obs:
        case Resolved():
            status = _resolved(status, obs)
        case Checked():
            status = dataclasses.replace(status, last_checked=_latest(status.last_checked, obs.at))
        case Pinned():
            status = _pin(status, obs.digest, obs.workload, obs.at)
        case Unpinned():
            status = _unpin(status, obs.workload, obs.digest)
        case Missing():
            status = _set_missing(status, obs.digest, obs.at)
        case Present():
            status = _set_missing(status, obs.digest, None)
    return _finish(status, now)


def apply_all(
    status: TagStatus | None, observations: Sequence[Observation], *, now: datetime
) -> TagStatus | None:
    for obs in observations:
        status = apply(status, obs, now=now)
    return status


def is_news(status: TagStatus | None, obs: Observation, *, checked_every: float = 3600.0) -> bool:
    """Whether ``obs`` changes what a writer must store. Not news: a resolution to the
    current digest whose workload is listed already (a cached review), a check within
    ``checked_every`` seconds of the stored ``lastChecked`` (the watch writes ``lastChecked``
    now and then, not every interval), a digest already known missing. Times alone
    (``lastResolved``, a digest's ``lastSeen``) are not news: they ride along with the next
    write. Constant work: the lists it looks at are bounded."""
    if status is None:
        return isinstance(obs, Resolved)
    match obs:
        case Resolved():
            if obs.immutable and obs.digest != status.first_digest:
                c = status.condition(ConditionType.IMMUTABLE_TAG_MOVED)
                if c is None or c.status != "True":
                    return True
            use = status.use(obs.digest)
            if use is None or use.missing_since is not None:
                return True
            if obs.digest != status.current_digest and obs.at > status.last_resolved:
                return True  # a move
            if obs.seen_by == "watch" and _stale_check(status, obs.at, checked_every):
                return True
            return obs.workload is not None and not _pins(status, obs.digest, obs.workload)
        case Checked():
            return _stale_check(status, obs.at, checked_every)
        case Pinned():
            return not _pins(status, obs.digest, obs.workload)
        case Unpinned():
            return any(
                u.lists(obs.workload) for u in status.digests if obs.digest in (None, u.digest)
            )
        case Missing():
            use = status.use(obs.digest)
            return use is not None and use.missing_since is None
        case Present():
            use = status.use(obs.digest)
            return use is not None and use.missing_since is not None


def _stale_check(status: TagStatus, at: datetime, checked_every: float) -> bool:
    last = status.last_checked
    return last is None or (at - last).total_seconds() >= checked_every


def _pins(status: TagStatus, digest: str, workload: Workload) -> bool:
    use = status.use(digest)
    return use is not None and use.lists(workload)


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _resolved(status: TagStatus, obs: Resolved) -> TagStatus:
    if obs.digest == status.current_digest:
        status = dataclasses.replace(status, last_resolved=_latest(status.last_resolved, obs.at))
    elif obs.at > status.last_resolved:
        move = Move(
            from_digest=status.current_digest, to_digest=obs.digest, at=obs.at, seen_by=obs.seen_by
        )
        status = dataclasses.replace(
            status,
            current_digest=obs.digest,
            last_resolved=obs.at,
            moves=status.moves + 1,
            last_moved=obs.at,
            history=(move, *status.history)[:HISTORY_KEPT],
        )
    if obs.seen_by == "watch":
        status = dataclasses.replace(status, last_checked=_latest(status.last_checked, obs.at))
    status = _seen(status, obs.digest, obs.at)
    status = _set_missing(status, obs.digest, None)  # it resolved: it exists
    if obs.workload is not None:
        status = _pin(status, obs.digest, obs.workload, obs.at)
    if obs.immutable and obs.digest != status.first_digest:
        status = _immutable_moved(status, obs)
    return status


def _seen(status: TagStatus, digest: str, at: datetime) -> TagStatus:
    """``digest`` is one of the tag's digests, seen at ``at``."""
    use = status.use(digest)
    if use is None:
        use = DigestUse(digest=digest, first_seen=at, last_seen=at)
        return dataclasses.replace(status, digests=(use, *status.digests))
    if at <= use.last_seen:
        return status
    return _replace_use(status, dataclasses.replace(use, last_seen=at))


def _replace_use(status: TagStatus, new: DigestUse) -> TagStatus:
    return dataclasses.replace(
        status, digests=tuple(new if u.digest == new.digest else u for u in status.digests)
    )


def _pin(status: TagStatus, digest: str, workload: Workload, at: datetime) -> TagStatus:
    status = _seen(status, digest, at)
    uses: list[DigestUse] = []
    for u in status.digests:
        if u.digest != digest:
            if u.lists(workload):
                u = dataclasses.replace(
                    u, workloads=tuple(w for w in u.workloads if w.key != workload.key)
                )
        elif u.lists(workload):
            u = dataclasses.replace(
                u, workloads=tuple(workload if w.key == workload.key else w for w in u.workloads)
            )
        elif len(u.workloads) < WORKLOADS_LISTED:
            u = dataclasses.replace(u, workloads=(workload, *u.workloads))
        else:
            u = dataclasses.replace(u, unlisted=u.unlisted + 1)
        uses.append(u)
    return dataclasses.replace(status, digests=tuple(uses))


def _unpin(status: TagStatus, workload: Workload, digest: str | None) -> TagStatus:
    uses = tuple(
        dataclasses.replace(u, workloads=tuple(w for w in u.workloads if w.key != workload.key))
        if digest in (None, u.digest) and u.lists(workload)
        else u
        for u in status.digests
    )
    return dataclasses.replace(status, digests=uses)


def _set_missing(status: TagStatus, digest: str, since: datetime | None) -> TagStatus:
    use = status.use(digest)
    if use is None or (use.missing_since is None) == (since is None):
        return status
    return _replace_use(status, dataclasses.replace(use, missing_since=since))


def _immutable_moved(status: TagStatus, obs: Resolved) -> TagStatus:
    known = status.condition(ConditionType.IMMUTABLE_TAG_MOVED)
    if known is not None and known.status == "True":
        return status  # the first offending move stays on record
    message = (
        f"{status.first_digest} was first seen at {types.rfc3339(status.first_seen)} "
        f"(by {status.first_seen_by}) for a tag under tags.immutable; it resolved to "
        f"{obs.digest} at {types.rfc3339(obs.at)} (seen by {obs.seen_by}). Push a new tag "
        "for new content, or pin by digest; delete this record to trust the new digest"
    )
    return _set_condition(
        status,
        Condition(
            type=ConditionType.IMMUTABLE_TAG_MOVED,
            status="True",
            reason=Reason.IMMUTABLE_TAG_MOVED,
            message=message,
            last_transition=obs.at,
        ),
    )


def _set_condition(status: TagStatus, new: Condition) -> TagStatus:
    """Set one condition; ``last_transition`` is kept while its status does not change."""
    old = status.condition(new.type)
    if old is not None and old.status == new.status:
        new = dataclasses.replace(new, last_transition=old.last_transition)
    others = tuple(c for c in status.conditions if c.type != new.type)
    return dataclasses.replace(status, conditions=(*others, new))


def _finish(status: TagStatus, now: datetime) -> TagStatus:
    """Bounds, then the Moved and DigestMissing conditions from the state (ImmutableTagMoved
    is set by the resolution that saw it, False until then), in a fixed order."""
    status = _bounded(status)
    if status.moves:
        last = status.history[0] if status.history else None
        message = f"moved {status.moves} time(s)"
        if last is not None:
            message += (
                f"; last from {last.from_digest} to {last.to_digest} at "
                f"{types.rfc3339(last.at)} (seen by {last.seen_by})"
            )
        moved = Condition(
            type=ConditionType.MOVED,
            status="True",
            reason=Reason.TAG_MOVED,
            message=message,
            last_transition=status.last_moved or now,
        )
    else:
        moved = Condition(
            type=ConditionType.MOVED,
            status="False",
            reason=Reason.NOT_MOVED,
            message=f"at its first-seen digest {status.first_digest}",
            last_transition=status.first_seen,
        )
    status = _set_condition(status, moved)
    gone = [u for u in status.digests if u.missing_since is not None and u.workload_count]
    if gone:
        parts = [
            f"{u.digest} (missing since {types.rfc3339(u.missing_since)}; pinned by "
            f"{_workload_list(u)})"
            for u in gone
            if u.missing_since is not None
        ]
        missing = Condition(
            type=ConditionType.DIGEST_MISSING,
            status="True",
            reason=Reason.PINNED_DIGEST_MISSING,
            message="gone from the registry while workloads pin them, their next pull fails: "
            + "; ".join(parts),
            last_transition=min(u.missing_since for u in gone if u.missing_since is not None),
        )
    else:
        missing = Condition(
            type=ConditionType.DIGEST_MISSING,
            status="False",
            reason=Reason.DIGESTS_PRESENT,
            message="no pinned digest is known to be missing from the registry",
            last_transition=now,
        )
    status = _set_condition(status, missing)
    if status.condition(ConditionType.IMMUTABLE_TAG_MOVED) is None:
        status = _set_condition(
            status,
            Condition(
                type=ConditionType.IMMUTABLE_TAG_MOVED,
                status="False",
                reason=Reason.NO_IMMUTABLE_MOVE,
                message="no move seen while the tag was under tags.immutable",
                last_transition=status.first_seen,
            ),
        )
    order = {t: i for i, t in enumerate(ConditionType.ALL)}
    conditions = tuple(sorted(status.conditions, key=lambda c: order.get(c.type, len(order))))
    return dataclasses.replace(status, conditions=conditions)


def _workload_list(use: DigestUse, shown: int = 5) -> str:
    names = [w.key for w in use.workloads[:shown]]
    more = use.workload_count - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _bounded(status: TagStatus) -> TagStatus:
    uses = list(status.digests)
    while len(uses) > DIGESTS_KEPT:
        candidates = [u for u in uses if u.digest != status.current_digest]
        unused = [u for u in candidates if not u.workload_count]
        victim = min(unused or candidates, key=lambda u: u.last_seen)
        uses.remove(victim)
    if len(uses) == len(status.digests) and len(status.history) <= HISTORY_KEPT:
        return status
    return dataclasses.replace(status, digests=tuple(uses), history=status.history[:HISTORY_KEPT])


# --- workloads ----------------------------------------------------------------------------

POD_TEMPLATE_HASH: Final = "pod-template-hash"


def workload_of(obj: Mapping[str, Any], namespace: str) -> Workload | None:
    """The owner-level object an admitted ``obj`` belongs to: its controller owner (a
    ReplicaSet's Pod is the Deployment's when the ReplicaSet's name is the Deployment's plus
    the Pod's ``pod-template-hash``), else ``obj`` itself. None without a name (a Pod of a
    ``generateName`` has none at admission)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    for owner in meta.get("ownerReferences") or ():
        if not isinstance(owner, Mapping) or owner.get("controller") is not True:
            continue
        kind, name = owner.get("kind"), owner.get("name")
        api_version = owner.get("apiVersion")
        if not (isinstance(kind, str) and isinstance(name, str) and name):
            return None
        labels = meta.get("labels")
        pod_hash = labels.get(POD_TEMPLATE_HASH) if isinstance(labels, Mapping) else None
        if kind == "ReplicaSet" and isinstance(pod_hash, str) and name.endswith(f"-{pod_hash}"):
            return Workload(
                api_version="apps/v1",
                kind="Deployment",
                namespace=namespace,
                name=name.removesuffix(f"-{pod_hash}"),
            )
        return Workload(
            api_version=api_version if isinstance(api_version, str) else "",
            kind=kind,
            namespace=namespace,
            name=name,
        )
    kind, name, api_version = obj.get("kind"), meta.get("name"), obj.get("apiVersion")
    if not (isinstance(kind, str) and kind and isinstance(name, str) and name):
        return None
    return Workload(
        api_version=api_version if isinstance(api_version, str) else "",
        kind=kind,
        namespace=namespace,
        name=name,
    )


def mentions(obj: object, digest: str) -> bool:
    """Whether any string in ``obj`` (a decoded JSON object) contains ``digest``: does a live
    workload still pin it (annotations included)?"""
    return any(digest in s for s in _strings(obj))


def _strings(obj: object) -> Iterator[str]:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
