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
from typing import Any, cast

import kopf

from controller import metrics as metrics_mod
from controller import pinning, sites


@dataclass(frozen=True, kw_only=True)
class WebhookResource:
    """A resource kitpin admits: built-ins by plural, extra CRD sites by kind."""

    group: str
    version: str | None = None
    plural: str | None = None
    kind: str | None = None

    @property
    def slug(self) -> str:
        name = (self.plural or self.kind or "").lower()
        return name if not self.group else f"{name}-{self.group.replace('.', '-')}"


BUILTIN_RESOURCES: tuple[WebhookResource, ...] = (
    WebhookResource(group="", version="v1", plural="pods"),
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


def _review(
    *,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    operation: str | None,
    dryrun: bool,
    ignored: Mapping[str, Any] | None,
) -> pinning.Review:
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    return pinning.Review(
        operation=operation or "",
        namespace=namespace,
        obj=body,
        old=old,
        dry_run=dryrun,
        namespace_ignored=bool(ignored is not None and namespace in ignored),
    )


def _apply_values(body: dict[str, Any], *, values: Mapping[str, str]) -> None:
    """A kopf patch function: kopf diffs the body before/after into a JSON Patch."""
    new = sites.apply(body, values)
    body.clear()
    body.update(new)


def register(
    registry: kopf.OperatorRegistry,
    engine: pinning.Engine,
    *,
    metrics: metrics_mod.Metrics,
    resources: Iterable[WebhookResource] = BUILTIN_RESOURCES,
) -> list[str]:
    """Register the handlers for every resource (built-in + extra CRD sites) in
    ``registry``; return the handler ids (= webhook URL paths)."""

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
        review = _review(
            body=body,
            old=old,
            operation=operation,
            dryrun=dryrun,
            ignored=kwargs.get("ignored_namespaces"),
        )
        decision = await engine.mutate(review)
        metrics.observe_admission("mutate", decision.reason, time.perf_counter() - started)
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
        started = time.perf_counter()
        review = _review(
            body=body,
            old=old,
            operation=operation,
            dryrun=dryrun,
            ignored=kwargs.get("ignored_namespaces"),
        )
        decision = await engine.validate(review)
        metrics.observe_admission("validate", decision.reason, time.perf_counter() - started)
        warnings.extend(decision.warnings)
        if decision.denial is not None:
            raise kopf.AdmissionError(decision.denial.message, code=decision.denial.code)

    ids: list[str] = []
    for res in resources:
        pin_id, check_id = handler_ids(res)
        kopf.on.mutate(
            group=res.group,
            version=res.version,
            plural=res.plural,
            kind=res.kind,
            id=pin_id,
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(cast(Any, mutate))
        kopf.on.validate(
            group=res.group,
            version=res.version,
            plural=res.plural,
            kind=res.kind,
            id=check_id,
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(cast(Any, validate))
        ids += [pin_id, check_id]

    @kopf.index("namespaces", labels={pinning.IGNORE_LABEL: "true"}, registry=registry)
    def ignored_namespaces(name: str, **_: Any) -> dict[str, bool]:
        return {name: True}

    return ids
