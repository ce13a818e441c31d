"""kopf's indexes, read into the engine's :class:`~controller.admission.pinning.Review`.

kopf keeps, fed by its watches, the labels of every namespace and the parsed policies (never
fetched per review); it passes them to handlers as keyword arguments named by each index's
handler id, and binds the same mapping into the webhook function it hands to servers, where
the fast path reads it (:func:`controller.admission.kopfcompat.indexes`). Either way, a review
reads them here. An index is a mapping of keys to stores (iterables of values), as
``kopf.Index``/``kopf.Store`` are; nothing here imports kopf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from controller.admission import pinning

__all__ = [
    "CLUSTER_POLICIES_INDEX",
    "NAMESPACED_POLICIES_INDEX",
    "NAMESPACE_LABELS_INDEX",
    "review",
]

NAMESPACE_LABELS_INDEX: Final = "kitpin_namespace_labels"
CLUSTER_POLICIES_INDEX: Final = "kitpin_cluster_policies"
NAMESPACED_POLICIES_INDEX: Final = "kitpin_namespaced_policies"
"""The index ids (:mod:`controller.admission.webhook` registers the indexes under them). They
are explicit: the default id of a nested function is its qualified name. Namespace labels
serve both ``kitpin.dev/ignore=true`` and cluster policies' namespaceSelectors; policies are
parsed once per change, never fetched per admission."""


def _first(index: Any, key: str) -> Any:
    """The single value a kopf index holds for ``key`` (None when absent)."""
    if index is None:
        return None
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def _all(index: Any) -> list[Any]:
    return [] if index is None else [value for store in index.values() for value in store]


def review(
    *,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    operation: str | None,
    dryrun: bool,
    indexes: Mapping[str, Any],
) -> pinning.Review:
    """The engine's view of one review: the object, and what the indexes know of its
    namespace (labels, ``kitpin.dev/ignore``) and of the policies in force."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    labels = _first(indexes.get(NAMESPACE_LABELS_INDEX), namespace) or {}
    return pinning.Review(
        operation=operation or "",
        namespace=namespace,
        obj=body,
        old=old,
        dry_run=dryrun,
        namespace_ignored=labels.get(pinning.IGNORE_LABEL) == "true",
        namespace_labels=labels,
        policies=_all(indexes.get(CLUSTER_POLICIES_INDEX))
        + _all(indexes.get(NAMESPACED_POLICIES_INDEX)),
    )
