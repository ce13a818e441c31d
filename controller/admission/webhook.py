"""kopf admission handlers: thin. All decisions live in :mod:`controller.admission.pinning`.

One mutating and one validating handler per resource kind, each with a DNS-safe id that is
also its URL path (``/pin-pods``, ``/check-deployments``, ...), so kopf routes a review
straight to its one handler. The Helm chart's webhook configurations use these paths.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import orjson

from controller import audit, errors, policy, sites
from controller import metrics as metrics_mod
from controller.admission import pinning

logger = logging.getLogger(__name__)


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


class Admission:
    """What kitpin's handlers do with a review, shared by the kopf handlers and the fast path:
    the engine's decision, the admission metrics and the audit trail."""

    def __init__(
        self,
        engine: pinning.Engine,
        *,
        metrics: metrics_mod.Metrics,
        recorder: audit.AuditRecorder | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.recorder = recorder

    async def mutate(self, review: pinning.Review) -> pinning.Decision:
        started = time.perf_counter()
        decision = await self.engine.mutate(review)
        self.metrics.observe_admission("mutate", decision.reason, time.perf_counter() - started)
        if decision.denial is not None:
            _record(self.recorder, review, decision)  # a policy denial is final here
        return decision

    async def validate(self, review: pinning.Review) -> pinning.Decision:
        started = time.perf_counter()
        decision = await self.engine.validate(review)
        self.metrics.observe_admission("validate", decision.reason, time.perf_counter() - started)
        _record(self.recorder, review, decision)
        return decision


def _escape(token: str) -> str:
    """One RFC 6901 reference token."""
    return token.replace("~", "~0").replace("/", "~1")


def json_patch(obj: Mapping[str, Any], decision: pinning.Decision) -> list[dict[str, Any]]:
    """The RFC 6902 patch for a decision, built from its pointers: what kopf would compute by
    deep-copying the object, applying the changes and diffing the whole of it, at a tiny
    fraction of the cost. ``values`` replace strings that exist at their pointers (the sites
    found them there); annotations are added, replaced or removed (a removal of an absent key
    is no operation, as in kopf)."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": pointer, "value": value}
        for pointer, value in decision.values.items()
    ]
    if decision.annotations:
        meta = obj.get("metadata")
        current = meta.get("annotations") if isinstance(meta, Mapping) else None
        if not isinstance(meta, Mapping):
            ops.append({"op": "add", "path": "/metadata", "value": {}})
        if not isinstance(current, Mapping):
            new = {k: v for k, v in decision.annotations.items() if v is not None}
            if new:
                ops.append({"op": "add", "path": "/metadata/annotations", "value": new})
        else:
            for key, value in decision.annotations.items():
                path = "/metadata/annotations/" + _escape(key)
                if value is None:
                    if key in current:
                        ops.append({"op": "remove", "path": path})
                elif key in current:
                    if current[key] != value:
                        ops.append({"op": "replace", "path": path, "value": value})
                else:
                    ops.append({"op": "add", "path": path, "value": value})
    return ops


@dataclass(frozen=True, kw_only=True)
class _Route:
    mutating: bool
    resource: WebhookResource


class FastPath:
    """Serves kitpin's own webhooks (``/pin-*``, ``/check-*``) without kopf's generic
    admission machinery: no memo, no Body/Diff wrappers, no handler selection, no per-review
    log line, and above all no deep copy + whole-object diff to build the JSON patch (that
    alone cost ~70% of a warm review). The engine, the metrics, the audit trail and the
    indexes (namespace labels, policies) are the same objects the kopf handlers use, so the
    answers are the same; tests compare the two paths on the same reviews.

    Anything it does not recognise exactly (another resource, subresource or operation than
    the route's, a malformed review) returns None, and kopf serves it as before."""

    def __init__(self, admission: Admission, resources: Iterable[WebhookResource]) -> None:
        self.admission = admission
        self.routes: dict[str, _Route] = {}
        for res in resources:
            pin_id, check_id = handler_ids(res)
            self.routes[pin_id] = _Route(mutating=True, resource=res)
            self.routes[check_id] = _Route(mutating=False, resource=res)

    def _matches(self, route: _Route, request: Mapping[str, Any]) -> bool:
        res = route.resource
        resource = request.get("resource") or {}
        if resource.get("group", "") != res.group:
            return False
        if res.plural is not None and resource.get("resource") != res.plural:
            return False
        if res.version is not None and resource.get("version") != res.version:
            return False
        if res.kind is not None and (request.get("kind") or {}).get("kind") != res.kind:
            return False
        if (request.get("subResource") or None) != res.subresource:
            return False
        return request.get("operation") in res.operations

    async def serve(
        self, data: Mapping[str, Any], webhook: str | None, indexes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The AdmissionReview response, or None to let kopf serve the review."""
        route = self.routes.get(webhook or "")
        request = data.get("request") if isinstance(data, Mapping) else None
        if route is None or not isinstance(request, Mapping) or not self._matches(route, request):
            return None
        obj = request.get("object")
        old = request.get("oldObject")
        body = obj if obj is not None else old
        if not isinstance(body, Mapping) or request.get("userInfo") is None:
            return None  # kopf answers malformed reviews with its own errors
        review = _review(
            body=body,
            old=old if isinstance(old, Mapping) else None,
            operation=str(request.get("operation") or ""),
            dryrun=bool(request.get("dryRun")),
            indexes=indexes,
        )
        payload: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
        try:
            if route.mutating:
                decision = await self.admission.mutate(review)
            else:
                decision = await self.admission.validate(review)
        except Exception as e:  # what kopf does with a handler's unexpected error
            logger.exception("webhook %s failed", webhook)
            payload["allowed"] = False
            payload["status"] = {"message": str(e) or repr(e), "code": 500}
        else:
            if decision.warnings:
                payload["warnings"] = [str(w) for w in decision.warnings]
            if decision.denial is not None:
                payload["allowed"] = False
                payload["status"] = {
                    "message": decision.denial.message,
                    "code": decision.denial.code,
                }
            elif route.mutating and decision.changes:
                ops = json_patch(body, decision)
                if ops:
                    payload["patch"] = base64.b64encode(orjson.dumps(ops)).decode("ascii")
                    payload["patchType"] = "JSONPatch"
        return {
            "apiVersion": data.get("apiVersion", "admission.k8s.io/v1"),
            "kind": data.get("kind", "AdmissionReview"),
            "response": payload,
        }


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
    admission = Admission(engine, metrics=metrics, recorder=recorder)

    async def mutate(
        body: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        operation: str | None,
        dryrun: bool,
        patch: kopf.Patch,
        warnings: list[str],
        **kwargs: Any,
    ) -> None:
        review = _review(body=body, old=old, operation=operation, dryrun=dryrun, indexes=kwargs)
        decision = await admission.mutate(review)
        warnings.extend(decision.warnings)
        if decision.denial is not None:
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
        review = _review(body=body, old=old, operation=operation, dryrun=dryrun, indexes=kwargs)
        decision = await admission.validate(review)
        warnings.extend(decision.warnings)
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
