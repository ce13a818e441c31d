"""kopf admission handlers: thin. All decisions live in :mod:`controller.pinning`.

One mutating and one validating handler per resource kind, each with a DNS-safe id that is
also its URL path (``/pin-pods``, ``/check-deployments``, ...), so kopf routes a review
straight to its one handler. The Helm chart's webhook configurations use these paths.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from controller import audit, errors, pinning, policy, sites
from controller import metrics as metrics_mod


@dataclass(frozen=True, kw_only=True)
class WebhookResource:
    """A resource kitpin admits: built-ins by plural, extra CRD sites by kind."""

    group: str
    version: str | None = None
    plural: str | None = None
    kind: str | None = None
    subresource: str | None = None
    """e.g. ``ephemeralcontainers``: ``kubectl debug`` adds containers through
    ``pods/ephemeralcontainers``, never through a plain Pod UPDATE."""
    operations: tuple[str, ...] = ("CREATE", "UPDATE")

    @property
    def slug(self) -> str:
        name = (self.plural or self.kind or "").lower()
        if self.subresource:
            name = f"{name}-{self.subresource}"
        return name if not self.group else f"{name}-{self.group.replace('.', '-')}"


BUILTIN_RESOURCES: tuple[WebhookResource, ...] = (
    WebhookResource(group="", version="v1", plural="pods"),
    WebhookResource(
        group="",
        version="v1",
        plural="pods",
        subresource="ephemeralcontainers",
        operations=("UPDATE",),
    ),
    WebhookResource(group="", version="v1", plural="replicationcontrollers"),
    WebhookResource(group="apps", version="v1", plural="deployments"),
    WebhookResource(group="apps", version="v1", plural="statefulsets"),
    WebhookResource(group="apps", version="v1", plural="daemonsets"),
    WebhookResource(group="apps", version="v1", plural="replicasets"),
    WebhookResource(group="batch", version="v1", plural="jobs"),
    WebhookResource(group="batch", version="v1", plural="cronjobs"),
    WebhookResource(group="serving.kserve.io", version="v1beta1", plural="inferenceservices"),
)

_HANDLER_IDS = {  # short, stable ids for the built-in kinds (they are URL paths in the chart)
    "pods": "pods",
    "deployments-apps": "deployments",
    "statefulsets-apps": "statefulsets",
    "daemonsets-apps": "daemonsets",
    "replicasets-apps": "replicasets",
    "jobs-batch": "jobs",
    "cronjobs-batch": "cronjobs",
    "inferenceservices-serving-kserve-io": "inferenceservices",
}


def handler_ids(resource: WebhookResource) -> tuple[str, str]:
    """(mutating id, validating id) for a resource: ``pin-<name>``, ``check-<name>``."""
    name = _HANDLER_IDS.get(resource.slug, resource.slug)
    return f"pin-{name}", f"check-{name}"


def extra_resources(extra: Iterable[sites.ExtraSite]) -> list[WebhookResource]:
    """The resources of the extra CRD sites (by group and kind), deduplicated, in order."""
    seen: list[WebhookResource] = []
    for site in extra:
        resource = WebhookResource(group=site.group, kind=site.kind)
        if resource not in seen:
            seen.append(resource)
    return seen


NAMESPACE_LABELS_INDEX = "kitpin_namespace_labels"
CLUSTER_POLICIES_INDEX = "kitpin_cluster_policies"
NAMESPACED_POLICIES_INDEX = "kitpin_namespaced_policies"
"""kopf indexes, passed to handlers as keyword arguments named by the index's handler id. The
ids are explicit: the default id of a nested function is its qualified name. Namespace labels
serve both ``kitpin.dev/ignore=true`` and cluster policies' namespaceSelectors; policies are
parsed once per change, never fetched per admission."""

POLICY_PLURALS = {
    policy.CLUSTER_KIND: "clustermodelkitpolicies",
    policy.NAMESPACED_KIND: "modelkitpolicies",
}


def _first(index: Any, key: str) -> Any:
    """The single value a kopf index holds for ``key`` (None when absent)."""
    if index is None:
        return None
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def _all(index: Any) -> list[Any]:
    return [] if index is None else [value for store in index.values() for value in store]


def _review(
    *,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    operation: str | None,
    dryrun: bool,
    indexes: Mapping[str, Any],
) -> pinning.Review:
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


def _apply_values(body: dict[str, Any], *, values: Mapping[str, str]) -> None:
    """A kopf patch function: kopf diffs the body before/after into a JSON Patch."""
    new = sites.apply(body, values)
    body.clear()
    body.update(new)


def _record(
    recorder: audit.AuditRecorder | None, review: pinning.Review, decision: pinning.Decision
) -> None:
    """Audit trail, once per object: not for dry runs, and not for objects made by a
    controller (their owner's violations were recorded when the owner was admitted)."""
    if recorder is None or review.dry_run or not decision.violations:
        return
    if sites.controller_owner(review.obj) is not None:
        return
    recorder.record(decision.violations, obj=review.obj, namespace=review.namespace)


def register(
    registry: kopf.OperatorRegistry,
    engine: pinning.Engine,
    *,
    metrics: metrics_mod.Metrics,
    resources: Iterable[WebhookResource] = BUILTIN_RESOURCES,
    recorder: audit.AuditRecorder | None = None,
) -> list[str]:
    """Register the handlers for every resource (built-in + extra CRD sites) and for the
    policy objects in ``registry``; return the handler ids (= webhook URL paths)."""

    async def mutate(
        body: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        operation: str | None,
        dryrun: bool,
        patch: kopf.Patch,
        warnings: list[str],
        **kwargs: Any,
    ) -> None:
        started = time.perf_counter()
        review = _review(body=body, old=old, operation=operation, dryrun=dryrun, indexes=kwargs)
        decision = await engine.mutate(review)
        metrics.observe_admission("mutate", decision.reason, time.perf_counter() - started)
        warnings.extend(decision.warnings)
        if decision.denial is not None:
            _record(recorder, review, decision)  # a policy denial is final here
            raise kopf.AdmissionError(decision.denial.message, code=decision.denial.code)
        if decision.values:
            patch.fns.append(functools.partial(_apply_values, values=dict(decision.values)))
        for key, value in decision.annotations.items():
            patch.metadata.annotations[key] = value

    async def validate(
        body: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        operation: str | None,
        dryrun: bool,
        warnings: list[str],
        **kwargs: Any,
    ) -> None:
        started = time.perf_counter()
        review = _review(body=body, old=old, operation=operation, dryrun=dryrun, indexes=kwargs)
        decision = await engine.validate(review)
        metrics.observe_admission("validate", decision.reason, time.perf_counter() - started)
        warnings.extend(decision.warnings)
        _record(recorder, review, decision)
        if decision.denial is not None:
            raise kopf.AdmissionError(decision.denial.message, code=decision.denial.code)

    ids: list[str] = []
    for res in resources:
        pin_id, check_id = handler_ids(res)
        for decorator, handler_id, fn in (
            (kopf.on.mutate, pin_id, mutate),
            (kopf.on.validate, check_id, validate),
        ):
            decorator(
                group=res.group,
                version=res.version,
                plural=res.plural,
                kind=res.kind,
                subresource=res.subresource,
                id=handler_id,
                operations=cast(Any, list(res.operations)),
                registry=registry,
            )(cast(Any, fn))
        ids += [pin_id, check_id]

    @kopf.index("namespaces", id=NAMESPACE_LABELS_INDEX, registry=registry)
    def namespace_labels(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
        return {name: dict(labels)}

    ids += _register_policies(registry, recorder)
    return ids


def _register_policies(
    registry: kopf.OperatorRegistry, recorder: audit.AuditRecorder | None
) -> list[str]:
    """Policy objects: a validating webhook (the same parser the index uses, so nothing that
    is admitted can fail to load), an index of parsed policies, and ``status`` kept true."""

    def index_policy(body: Mapping[str, Any], **_: Any) -> dict[Any, policy.Policy] | None:
        try:
            parsed = policy.parse_policy(body)
        except errors.ConfigError:
            return None  # not in force; its status says why (see policy_status)
        return {parsed.ref: parsed}

    async def check_policy(body: Mapping[str, Any], **_: Any) -> None:
        try:
            policy.parse_policy(body)
        except errors.ConfigError as e:
            raise kopf.AdmissionError(str(e), code=422) from e

    def policy_status(
        body: Mapping[str, Any],
        patch: kopf.Patch,
        **kwargs: Any,
    ) -> None:
        event_type = kwargs.get("type")
        meta = body.get("metadata") or {}
        kind = str(body.get("kind") or "")
        ns = meta.get("namespace") if kind == policy.NAMESPACED_KIND else None
        ref = policy.PolicyRef(kind=cast(Any, kind), namespace=ns, name=str(meta.get("name")))
        if event_type == "DELETED":
            if recorder is not None:
                recorder.forget(ref)
            return
        if recorder is not None:
            recorder.observe(ref, body)
        previous = body.get("status") or {}
        now = datetime.now(UTC)
        try:
            new = policy.accepted_status(policy.parse_policy(body), now=now, previous=previous)
        except errors.ConfigError as e:
            new = policy.rejected_status(
                e, generation=meta.get("generation"), now=now, previous=previous
            )
        if any(previous.get(k) != new[k] for k in ("observedGeneration", "summary", "ruleCount")):
            for key, value in new.items():
                patch.status[key] = value

    ids: list[str] = []
    for kind, plural in POLICY_PLURALS.items():
        index_id = (
            CLUSTER_POLICIES_INDEX if kind == policy.CLUSTER_KIND else NAMESPACED_POLICIES_INDEX
        )
        kopf.index(policy.GROUP, policy.VERSION, plural, id=index_id, registry=registry)(
            index_policy
        )
        check_id = f"check-{plural}"
        kopf.on.validate(
            policy.GROUP,
            policy.VERSION,
            plural,
            id=check_id,
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(cast(Any, check_policy))
        kopf.on.event(
            policy.GROUP, policy.VERSION, plural, id=f"status-{plural}", registry=registry
        )(cast(Any, policy_status))
        ids.append(check_id)
    return ids
