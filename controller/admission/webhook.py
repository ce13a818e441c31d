"""kopf registration: thin. Decisions live in :mod:`controller.admission.pinning`, answers in
:mod:`controller.admission.response`.

One mutating and one validating handler per resource kind, each with a DNS-safe id that is
also its URL path (``/pin-pods``, ``/check-deployments``, ...), so kopf routes a review
straight to its one handler. The Helm chart's webhook configurations use these paths, and
the fast path (:mod:`controller.admission.fastpath`) serves the same paths (:func:`routes`)
before kopf does. Resources (:data:`BUILTIN_RESOURCES`): Kubernetes' own workloads and
PodTemplates, KServe's InferenceService, and the custom resources kitpin reads out of the box
(:data:`controller.sites.DEFAULT_SITES`: LeaderWorkerSet, JobSet, Ray, Knative, KServe's
LLMInferenceService, Kubeflow, Argo Rollouts, Volcano), then the extra sites of the settings
(:func:`extra_resources`). Also registered here: the indexes of namespace labels and parsed policies
(:mod:`controller.admission.indexes`), the policy objects' validating webhook and their
``status``.

A handler builds the same answer as the fast path (:func:`controller.admission.response.answer`)
and tells kopf what it says: its warnings, its denial as a ``kopf.AdmissionError``, its JSON
patch as a patch function (kopf applies it to a copy of the object and diffs the two).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from controller import audit, errors, policy, sites
from controller.admission import decide, fastpath, indexes, response


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


CORE_RESOURCES: tuple[WebhookResource, ...] = (
    WebhookResource(group="", version="v1", plural="pods"),
    WebhookResource(
        group="",
        version="v1",
        plural="pods",
        subresource="ephemeralcontainers",
        operations=("UPDATE",),
    ),
    WebhookResource(group="", version="v1", plural="podtemplates"),
    WebhookResource(group="", version="v1", plural="replicationcontrollers"),
    WebhookResource(group="apps", version="v1", plural="deployments"),
    WebhookResource(group="apps", version="v1", plural="statefulsets"),
    WebhookResource(group="apps", version="v1", plural="daemonsets"),
    WebhookResource(group="apps", version="v1", plural="replicasets"),
    WebhookResource(group="batch", version="v1", plural="jobs"),
    WebhookResource(group="batch", version="v1", plural="cronjobs"),
    WebhookResource(group="serving.kserve.io", version="v1beta1", plural="inferenceservices"),
)
"""The kinds kitpin has code for: Kubernetes' own workloads and KServe's InferenceService."""

DEFAULT_RESOURCES: tuple[WebhookResource, ...] = tuple(
    WebhookResource(group=site.group, kind=site.kind) for site in sites.DEFAULT_SITES.values()
)
"""The shipped custom resources (:data:`controller.sites.DEFAULT_SITES`), by group and kind
(every version), like the extra sites: handler ids ``pin-<kind>-<group>``."""

BUILTIN_RESOURCES: tuple[WebhookResource, ...] = CORE_RESOURCES + DEFAULT_RESOURCES
"""Every resource kitpin registers whatever its settings: a shipped default turned off in
settings keeps its handler (it finds nothing); the chart leaves it out of the webhook
configurations, so the apiserver never calls it."""

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
    """The resources of the extra CRD sites (by group and kind), deduplicated, in order;
    none that :data:`BUILTIN_RESOURCES` already has (an extra site that replaces a shipped
    default uses the default's handler)."""
    seen: list[WebhookResource] = []
    for site in extra:
        resource = WebhookResource(group=site.group, kind=site.kind)
        if resource not in seen and resource not in BUILTIN_RESOURCES:
            seen.append(resource)
    return seen


def resources(settings: sites.SitesSettings) -> list[WebhookResource]:
    """Exactly the resources ``settings`` reads: the core ones, the shipped defaults in force
    and the extra sites (what the chart's webhook configurations list, in its order)."""
    return [*CORE_RESOURCES, *_site_resources(settings.active_sites)]


def _site_resources(active: Iterable[sites.ExtraSite]) -> list[WebhookResource]:
    seen: list[WebhookResource] = []
    for site in active:
        resource = WebhookResource(group=site.group, kind=site.kind)
        if resource not in seen and resource not in CORE_RESOURCES:
            seen.append(resource)
    return seen


def routes(resources: Iterable[WebhookResource]) -> dict[str, fastpath.Route]:
    """The fast path's routes: the handler ids of ``resources`` (= URL paths)."""
    out: dict[str, fastpath.Route] = {}
    for res in resources:
        pin_id, check_id = handler_ids(res)
        out[pin_id] = fastpath.Route(mutating=True, resource=res)
        out[check_id] = fastpath.Route(mutating=False, resource=res)
    return out


def _by_kind(group: str, kind: str) -> Callable[[Any], bool]:
    """kopf's callable resource filter: this group and kind, any version it is served in."""

    def matches(resource: Any) -> bool:
        return bool(resource.group == group and resource.kind == kind)

    matches.__name__ = f"{kind}.{group}"
    return matches


POLICY_PLURALS = {
    policy.CLUSTER_KIND: "clustermodelkitpolicies",
    policy.NAMESPACED_KIND: "modelkitpolicies",
}


def _apply_patch(body: dict[str, Any], *, ops: list[sites.PatchOp]) -> None:
    """A kopf patch function: kopf diffs the body before/after into its JSON patch."""
    new = sites.patch(body, ops)
    body.clear()
    body.update(new)


def _tell_kopf(
    payload: response.ResponsePayload, *, warnings: list[str], patch: kopf.Patch | None
) -> None:
    """Hand kopf what the answer says: its warnings, its status (a denial) as an error,
    its JSON patch (mutating handlers) as the change to make."""
    warnings.extend(payload.get("warnings", ()))
    status = payload.get("status")  # the builder sets it exactly when not allowed
    if status is not None:
        raise kopf.AdmissionError(status["message"], code=status["code"])
    ops = response.patch_ops(payload)
    if ops and patch is not None:
        patch.fns.append(functools.partial(_apply_patch, ops=ops))


def register(
    registry: kopf.OperatorRegistry,
    admission: decide.Admission,
    *,
    resources: Iterable[WebhookResource] = BUILTIN_RESOURCES,
) -> list[str]:
    """Register the handlers for every resource (built-in + extra CRD sites) and for the
    policy objects in ``registry``; return the handler ids (= webhook URL paths)."""

    def handler(mutating: bool) -> Callable[..., Awaitable[None]]:
        decide_ = admission.mutate if mutating else admission.validate

        async def handle(
            body: Mapping[str, Any],
            old: Mapping[str, Any] | None,
            operation: str | None,
            dryrun: bool,
            patch: kopf.Patch,
            warnings: list[str],
            **kwargs: Any,
        ) -> None:
            review = indexes.review(
                body=body, old=old, operation=operation, dryrun=dryrun, indexes=kwargs
            )
            payload = response.answer(await decide_(review), obj=body, mutating=mutating)
            _tell_kopf(payload, warnings=warnings, patch=patch if mutating else None)

        return handle

    mutate, validate = handler(mutating=True), handler(mutating=False)
    ids: list[str] = []
    for res in resources:
        pin_id, check_id = handler_ids(res)
        for decorator, handler_id, fn in (
            (kopf.on.mutate, pin_id, mutate),
            (kopf.on.validate, check_id, validate),
        ):
            if res.kind is not None and res.plural is None and res.version is None:
                # By group and kind in every version: kopf's selector without a version
                # matches only the group's preferred version (never an LLMInferenceService,
                # v1alpha*, in serving.kserve.io, whose preferred version is v1beta1).
                decorator(
                    _by_kind(res.group, res.kind),
                    subresource=res.subresource,
                    id=handler_id,
                    operations=cast(Any, list(res.operations)),
                    registry=registry,
                )(cast(Any, fn))
                continue
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

    @kopf.index("namespaces", id=indexes.NAMESPACE_LABELS_INDEX, registry=registry)
    def namespace_labels(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
        return {name: dict(labels)}

    ids += _register_policies(registry, admission.recorder)
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
            indexes.CLUSTER_POLICIES_INDEX
            if kind == policy.CLUSTER_KIND
            else indexes.NAMESPACED_POLICIES_INDEX
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
