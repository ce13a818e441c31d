"""Arming: the chart's webhook configurations fail open until kitpin serves, then each
replica sets the failure policy they ask for.

Why (``docs/install.md``): webhook configurations with ``failurePolicy: Fail`` installed in
the same ``helm install`` as the Pods that serve them refuse every covered workload until
those Pods are Ready, so the chart renders them with ``failurePolicy: Ignore`` and records
the policy it wants in the annotation :data:`POLICY_ANNOTATION`; every kitpin replica, once
it serves, arms them.

One pass (:func:`arm`), for each configuration it was told to arm (``kitpin run
--arm-webhooks NAME``: the Mutating- and the ValidatingWebhookConfiguration of that name; a
kind that does not exist, such as the mutating one in validate-only mode, is skipped):

1. read it; the policy it asks for is its :data:`POLICY_ANNOTATION` (the chart writes
   ``webhook.failurePolicy`` there, so every replica, old or new, agrees during a rollout
   that changes it), else ``--arm-failure-policy``;
2. leave it fail-open while cert-manager has not injected its ``caBundle`` yet (a
   ``cert-manager.io/inject-*`` annotation and a webhook without one): the apiserver could
   not verify kitpin then, and ``Fail`` would refuse everything;
3. patch ``failurePolicy`` of each webhook whose policy differs, and nothing else: a
   strategic merge patch keyed by the webhook's name, with the ``resourceVersion`` read
   (someone else's change in between answers 409, and the next pass reads again).

When (:class:`Arming`): once this replica's server is ready (and, with ``--arm-service``,
once that Service in kitpin's namespace has a ready endpoint, so the apiserver can reach a
replica before ``Fail`` takes effect); then again every ``interval`` seconds, because a
``helm upgrade`` puts the rendered ``Ignore`` back (helm's three-way merge restores a field
the chart renders when the live object differs; the e2e test sees it) and may add webhooks.
Errors are logged and retried with exponential backoff. A replica never disarms: on exit the
others still serve, and ``helm uninstall`` deletes the configurations.

Errors: only :class:`controller.kubeapi.KubeError` reaches the loop, which logs it; nothing
here raises to its caller except cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote

from controller import kubeapi

logger = logging.getLogger(__name__)

FailurePolicy = Literal["Fail", "Ignore"]
FAILURE_POLICIES: Final[tuple[FailurePolicy, ...]] = ("Fail", "Ignore")

POLICY_ANNOTATION: Final = "kitpin.dev/failure-policy"
"""On a webhook configuration: the ``failurePolicy`` kitpin arms its webhooks with."""

CERT_MANAGER_INJECTION: Final = "cert-manager.io/inject-"
"""Prefix of cert-manager's CA injection annotations (``inject-ca-from``,
``inject-ca-from-secret``, ``inject-apiserver-ca``)."""

KINDS: Final[Mapping[str, str]] = {
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
}
"""The resources armed, by plural, with their kinds (for messages)."""

STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
API_PREFIX: Final = ("apis", "admissionregistration.k8s.io", "v1")


@dataclass(frozen=True, kw_only=True)
class ArmingSettings:
    """What ``kitpin run --arm-*`` asks for."""

    configurations: tuple[str, ...]
    """Names of the webhook configurations to arm (both kinds of each name). The chart passes
    its own (``<fullname>``); its RBAC allows exactly those (``resourceNames``)."""

    failure_policy: FailurePolicy = "Fail"
    """The policy for configurations without :data:`POLICY_ANNOTATION`. Default ``Fail``,
    the chart's ``webhook.failurePolicy`` default."""

    service: str | None = None
    """A Service in ``namespace``: arm only once it has a ready endpoint (the apiserver
    reaches the webhooks through it). None: arm as soon as this replica serves."""

    namespace: str | None = None
    """kitpin's own namespace, where ``service`` is."""

    interval: float = 10.0
    """Seconds between two checks once armed: what a ``helm upgrade`` set back to
    ``Ignore`` is armed again within this. A check is one GET per configuration."""

    retry_min: float = 0.5
    """Seconds before the first retry after an error; doubled after each, up to
    ``retry_max``."""

    retry_max: float = 30.0
    """Longest wait between retries (an apiserver that is down, missing RBAC)."""

    ready_poll: float = 0.2
    """Seconds between two looks at this replica's readiness before arming."""


class Api(Protocol):
    """The two calls arming needs (:class:`controller.kubeapi.KubeAPI` has them)."""

    async def get(self, path: str, *, timeout: float | None = None) -> dict[str, Any]: ...

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = ...,
        timeout: float | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one configuration needs (pure: :func:`plan`)."""

    policy: FailurePolicy
    """The policy it asks for."""

    to_arm: tuple[str, ...]
    """Webhooks whose ``failurePolicy`` differs from ``policy``."""

    waiting: tuple[str, ...] = ()
    """Webhooks left alone until cert-manager injects their ``caBundle``."""

    def patch(self, resource_version: str | None) -> dict[str, Any] | None:
        """The strategic merge patch arming ``to_arm`` (None when there is nothing to do)."""
        if not self.to_arm:
            return None
        body: dict[str, Any] = {
            "webhooks": [{"name": name, "failurePolicy": self.policy} for name in self.to_arm]
        }
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return body


@dataclass(kw_only=True)
class Report:
    """What one pass of :func:`arm` did."""

    armed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``kind/name`` → webhooks patched now."""

    waiting: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``kind/name`` → webhooks waiting for their ``caBundle``."""

    found: int = 0
    """Configurations read (0: none of those named exists)."""


def desired_policy(config: Mapping[str, Any], default: FailurePolicy) -> FailurePolicy:
    """The configuration's :data:`POLICY_ANNOTATION` when it names a policy, else
    ``default`` (an unknown value is logged and ignored)."""
    annotations = (config.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(POLICY_ANNOTATION)
    if value is None:
        return default
    for policy in FAILURE_POLICIES:
        if value == policy:
            return policy
    logger.warning(
        "%s=%r on webhook configuration %s is neither Fail nor Ignore: using %s",
        POLICY_ANNOTATION,
        value,
        (config.get("metadata") or {}).get("name"),
        default,
    )
    return default


def _injected_by_cert_manager(config: Mapping[str, Any]) -> bool:
    annotations = (config.get("metadata") or {}).get("annotations") or {}
    return any(str(key).startswith(CERT_MANAGER_INJECTION) for key in annotations)


def plan(config: Mapping[str, Any], default: FailurePolicy) -> Plan:
    """Which webhooks of ``config`` (a webhook configuration as the API returns it) need
    their ``failurePolicy`` changed, and which wait for cert-manager's ``caBundle``."""
    policy = desired_policy(config, default)
    injected = _injected_by_cert_manager(config)
    to_arm: list[str] = []
    waiting: list[str] = []
    for hook in config.get("webhooks") or ():
        name = hook.get("name")
        if not isinstance(name, str) or hook.get("failurePolicy") == policy:
            continue
        if injected and policy == "Fail" and not (hook.get("clientConfig") or {}).get("caBundle"):
            waiting.append(name)
        else:
            to_arm.append(name)
    return Plan(policy=policy, to_arm=tuple(to_arm), waiting=tuple(waiting))


def _config_path(plural: str, name: str) -> str:
    return kubeapi.path(*API_PREFIX, plural, name)


async def arm(api: Api, settings: ArmingSettings) -> Report:
    """One pass over the configurations (module docstring). Raises
    :class:`controller.kubeapi.KubeError` (a conflict included: the caller tries again)."""
    report = Report()
    for name in settings.configurations:
        for plural, kind in KINDS.items():
            path = _config_path(plural, name)
            try:
                config = await api.get(path)
            except kubeapi.NotFoundError:
                continue
            report.found += 1
            todo = plan(config, settings.failure_policy)
            where = f"{kind}/{name}"
            if todo.waiting:
                report.waiting[where] = todo.waiting
            body = todo.patch((config.get("metadata") or {}).get("resourceVersion"))
            if body is None:
                continue
            await api.patch(path, body, content_type=STRATEGIC_MERGE_PATCH)
            report.armed[where] = todo.to_arm
            logger.info(
                "armed %s: failurePolicy %s on %d webhook(s): %s",
                where,
                todo.policy,
                len(todo.to_arm),
                ", ".join(todo.to_arm),
            )
    return report


def ready_endpoints(slices: Mapping[str, Any]) -> int:
    """How many ready endpoints an EndpointSlice list holds (``ready`` unset counts as
    ready, as the API defines it)."""
    count = 0
    for item in slices.get("items") or ():
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                count += 1
    return count


async def service_ready(api: Api, namespace: str, service: str) -> bool:
    """True when the Service has a ready endpoint (its EndpointSlices, by the
    ``kubernetes.io/service-name`` label)."""
    selector = quote(f"kubernetes.io/service-name={service}", safe="")
    path = kubeapi.path("apis", "discovery.k8s.io", "v1", "namespaces", namespace, "endpointslices")
    return ready_endpoints(await api.get(f"{path}?labelSelector={selector}")) > 0


class Arming:
    """The arming loop of one replica: :meth:`run` until cancelled (module docstring)."""

    def __init__(
        self,
        api: Api,
        settings: ArmingSettings,
        *,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if settings.service and not settings.namespace:
            raise ValueError("an arming Service needs kitpin's namespace")
        self._api = api
        self._settings = settings
        self._sleep = sleep
        self.passes = 0
        """Passes that completed without an error."""
        self.armed_once = False
        """True once a pass found every webhook with the policy asked for."""

    async def run(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` (this replica serves), then arm and keep armed."""
        s = self._settings
        names = ", ".join(s.configurations)
        logger.info("arming %s once this replica serves", names)
        while not ready():
            await self._sleep(s.ready_poll)
        if s.service and s.namespace:
            await self._retrying(
                lambda: self._service_ready(s.namespace or "", s.service or ""),
                f"a ready endpoint of Service {s.namespace}/{s.service}",
            )
        failures = 0
        announced: set[str] = set()
        while True:
            try:
                report = await arm(self._api, s)
            except kubeapi.KubeError as e:
                failures += 1
                delay = self._backoff(failures)
                logger.warning(
                    "arming %s failed (%s); retrying in %.1fs%s",
                    names,
                    e,
                    delay,
                    _rbac_hint(e),
                )
                await self._sleep(delay)
                continue
            failures = 0
            self.passes += 1
            if report.found == 0 and "missing" not in announced:
                announced.add("missing")
                logger.warning(
                    "no webhook configuration named %s exists: nothing to arm (checked again "
                    "every %.0fs)",
                    names,
                    s.interval,
                )
            for where, hooks in report.waiting.items():
                if where not in announced:
                    announced.add(where)
                    logger.info(
                        "%s: %d webhook(s) stay fail-open until cert-manager injects their "
                        "caBundle",
                        where,
                        len(hooks),
                    )
            if report.armed and self.armed_once:
                logger.warning(
                    "armed again: %s had a different failurePolicy (a helm upgrade puts the "
                    "rendered Ignore back)",
                    ", ".join(sorted(report.armed)),
                )
            if report.found and not report.waiting:
                self.armed_once = True
            await self._sleep(s.interval)

    async def _service_ready(self, namespace: str, service: str) -> bool:
        return await service_ready(self._api, namespace, service)

    async def _retrying(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Until ``await check()`` is true; errors and "not yet" back off alike."""
        attempt = 0
        while True:
            try:
                if await check():
                    return
                problem = "not yet"
            except kubeapi.KubeError as e:
                problem = f"{e}{_rbac_hint(e)}"
            attempt += 1
            if attempt == 1 or attempt % 10 == 0:
                logger.info("arming waits for %s (%s)", what, problem)
            await self._sleep(self._backoff(attempt))

    def _backoff(self, failures: int) -> float:
        s = self._settings
        return float(min(s.retry_max, s.retry_min * 2 ** (failures - 1)))


def _rbac_hint(e: BaseException) -> str:
    if isinstance(e, kubeapi.ForbiddenError):
        return (
            ": kitpin's ServiceAccount needs get and patch on the webhook configurations it "
            "arms (the chart grants them by resourceNames), and list on endpointslices in its "
            "namespace with --arm-service"
        )
    return ""


def parse_names(values: Iterable[str]) -> tuple[str, ...]:
    """``--arm-webhooks`` values (repeatable, comma-separated) → unique names, in order."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return tuple(names)


def validate_names(names: Sequence[str]) -> str | None:
    """What is wrong with the configuration names (a problem message), or None."""
    for name in names:
        if name in (".", "..") or "/" in name:
            return f"--arm-webhooks: {name!r} is not a webhook configuration name"
    return None
