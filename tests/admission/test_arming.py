"""Arming (controller.admission.arming): the chart's fail-open webhook configurations get the
failure policy they ask for once kitpin serves, only that field changes, and a pass is
idempotent. The fake apiserver below applies strategic merge patches the way the real one
does for ``webhooks`` (merge key ``name``) and checks ``resourceVersion``; the real apiserver
is in tests/e2e/test_arming_e2e.py."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from controller import kubeapi
from controller.admission import arming

MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kitpin/endpointslices"


def hook(name: str, policy: str = "Ignore", ca: str | None = "Q0E=") -> dict[str, Any]:
    config: dict[str, Any] = {"service": {"name": "kitpin", "namespace": "kitpin"}}
    if ca is not None:
        config["caBundle"] = ca
    return {
        "name": name,
        "failurePolicy": policy,
        "clientConfig": config,
        "sideEffects": "None",
        "timeoutSeconds": 10,
    }


def configuration(
    name: str, *hooks: dict[str, Any], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "annotations": dict(annotations or {}),
        },
        "webhooks": list(hooks),
    }


class FakeApi:
    """GET and strategic-merge PATCH of webhook configurations, by path."""

    def __init__(self, objects: Mapping[str, dict[str, Any]]) -> None:
        self.objects = {path: copy.deepcopy(obj) for path, obj in objects.items()}
        self.gets: list[str] = []
        self.patches: list[tuple[str, dict[str, Any], str]] = []
        self.fail_next: list[kubeapi.KubeError] = []
        self.on_get: dict[str, Any] = {}

    async def get(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        self.gets.append(path)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if path in self.on_get:
            return dict(self.on_get[path]())
        if path not in self.objects:
            raise kubeapi.NotFoundError("GET", path, 404, "NotFound", "")
        return copy.deepcopy(self.objects[path])

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = kubeapi.MERGE_PATCH,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        assert content_type == arming.STRATEGIC_MERGE_PATCH
        self.patches.append((path, copy.deepcopy(dict(body)), content_type))
        obj = self.objects[path]
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != obj["metadata"]["resourceVersion"]:
            raise kubeapi.ConflictError("PATCH", path, 409, "Conflict", "modified")
        assert set(body) <= {"metadata", "webhooks"}
        by_name = {h["name"]: h for h in obj["webhooks"]}
        for change in body.get("webhooks", []):
            assert set(change) == {"name", "failurePolicy"}, change  # only that field
            by_name[change["name"]]["failurePolicy"] = change["failurePolicy"]
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)

    def policies(self, path: str) -> dict[str, str]:
        return {h["name"]: h["failurePolicy"] for h in self.objects[path]["webhooks"]}


def settings(*names: str, **kwargs: Any) -> arming.ArmingSettings:
    values: dict[str, Any] = {"interval": 0.01, "retry_min": 0.001, "retry_max": 0.01}
    values.update(kwargs)
    return arming.ArmingSettings(configurations=names, ready_poll=0.001, **values)


def chart_configs(policy: str = "Fail") -> dict[str, dict[str, Any]]:
    annotations = {arming.POLICY_ANNOTATION: policy}
    return {
        MUTATING + "kitpin": configuration(
            "kitpin",
            hook("pin-pods.kitpin.dev"),
            hook("pin-jobs.kitpin.dev"),
            annotations=annotations,
        ),
        VALIDATING + "kitpin": configuration(
            "kitpin", hook("check-pods.kitpin.dev"), annotations=annotations
        ),
    }


async def test_a_pass_arms_every_webhook_of_both_kinds_and_changes_nothing_else() -> None:
    api = FakeApi(chart_configs())
    before = copy.deepcopy(api.objects)
    report = await arming.arm(api, settings("kitpin"))
    assert report.found == 2
    assert report.armed == {
        "MutatingWebhookConfiguration/kitpin": ("pin-pods.kitpin.dev", "pin-jobs.kitpin.dev"),
        "ValidatingWebhookConfiguration/kitpin": ("check-pods.kitpin.dev",),
    }
    for path in (MUTATING + "kitpin", VALIDATING + "kitpin"):
        assert set(api.policies(path).values()) == {"Fail"}
        for now, was in zip(api.objects[path]["webhooks"], before[path]["webhooks"], strict=True):
            assert {**now, "failurePolicy": "Ignore"} == was
    # Each patch names the resourceVersion it read and only the webhooks' failurePolicy.
    assert [body for _, body, _ in api.patches] == [
        {
            "webhooks": [
                {"name": "pin-pods.kitpin.dev", "failurePolicy": "Fail"},
                {"name": "pin-jobs.kitpin.dev", "failurePolicy": "Fail"},
            ],
            "metadata": {"resourceVersion": "1"},
        },
        {
            "webhooks": [{"name": "check-pods.kitpin.dev", "failurePolicy": "Fail"}],
            "metadata": {"resourceVersion": "1"},
        },
    ]


async def test_a_second_pass_patches_nothing() -> None:
    api = FakeApi(chart_configs())
    await arming.arm(api, settings("kitpin"))
    patched = len(api.patches)
    report = await arming.arm(api, settings("kitpin"))
    assert report.armed == {} and len(api.patches) == patched


async def test_only_the_configurations_named() -> None:
    objects = chart_configs()
    objects[MUTATING + "someone-else"] = configuration("someone-else", hook("x.example.com"))
    api = FakeApi(objects)
    await arming.arm(api, settings("kitpin"))
    assert api.policies(MUTATING + "someone-else") == {"x.example.com": "Ignore"}
    assert all(path.endswith("/kitpin") for path in api.gets)


async def test_a_missing_kind_is_skipped() -> None:
    """validate-only mode: the chart installs no MutatingWebhookConfiguration."""
    objects = chart_configs()
    del objects[MUTATING + "kitpin"]
    api = FakeApi(objects)
    report = await arming.arm(api, settings("kitpin"))
    assert report.found == 1
    assert set(report.armed) == {"ValidatingWebhookConfiguration/kitpin"}


async def test_the_annotation_wins_over_the_flag() -> None:
    api = FakeApi(chart_configs(policy="Ignore"))
    api.objects[MUTATING + "kitpin"]["webhooks"][0]["failurePolicy"] = "Fail"
    await arming.arm(api, settings("kitpin", failure_policy="Fail"))
    assert set(api.policies(MUTATING + "kitpin").values()) == {"Ignore"}


def test_without_an_annotation_the_flag_decides() -> None:
    config = configuration("kitpin", hook("a.kitpin.dev"))
    assert arming.desired_policy(config, "Fail") == "Fail"
    assert arming.plan(config, "Fail").to_arm == ("a.kitpin.dev",)
    assert arming.plan(config, "Ignore").to_arm == ()


def test_an_unknown_annotation_value_falls_back_to_the_flag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = configuration("kitpin", annotations={arming.POLICY_ANNOTATION: "Sometimes"})
    assert arming.desired_policy(config, "Fail") == "Fail"
    assert "neither Fail nor Ignore" in caplog.text


def test_cert_manager_webhooks_wait_for_their_ca_bundle() -> None:
    config = configuration(
        "kitpin",
        hook("a.kitpin.dev", ca=None),
        hook("b.kitpin.dev", ca="Q0E="),
        annotations={"cert-manager.io/inject-ca-from": "kitpin/kitpin-serving"},
    )
    todo = arming.plan(config, "Fail")
    assert (todo.to_arm, todo.waiting) == (("b.kitpin.dev",), ("a.kitpin.dev",))
    # Without cert-manager an empty caBundle means the apiserver's own roots: armed.
    plain = configuration("kitpin", hook("a.kitpin.dev", ca=None))
    assert arming.plan(plain, "Fail").to_arm == ("a.kitpin.dev",)


def test_ready_endpoints_counts_unset_ready_as_ready() -> None:
    slices = {
        "items": [
            {"endpoints": [{"conditions": {"ready": False}}, {"conditions": {}}]},
            {"endpoints": None},
            {"endpoints": [{"conditions": {"ready": True}}]},
        ]
    }
    assert arming.ready_endpoints(slices) == 2
    assert arming.ready_endpoints({"items": []}) == 0


@pytest.mark.parametrize(
    ("values", "names"),
    [
        (["kitpin"], ("kitpin",)),
        (["a,b", "b", " c "], ("a", "b", "c")),
        ([], ()),
    ],
)
def test_parse_names(values: list[str], names: tuple[str, ...]) -> None:
    assert arming.parse_names(values) == names


def test_validate_names() -> None:
    assert arming.validate_names(["kitpin", "kitpin-2"]) is None
    assert arming.validate_names(["a/b"]) is not None
    assert arming.validate_names([".."]) is not None


# --------------------------------------------------------------------------- the loop


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_the_loop_waits_until_ready_then_arms_and_rearms_what_was_reverted() -> None:
    api = FakeApi(chart_configs())
    armer = arming.Arming(api, settings("kitpin"))
    ready = False
    task = asyncio.create_task(armer.run(lambda: ready))
    try:
        await asyncio.sleep(0.05)
        assert api.gets == []  # nothing read, nothing armed before the server serves
        ready = True
        await until(lambda: armer.armed_once)
        assert set(api.policies(MUTATING + "kitpin").values()) == {"Fail"}
        # What a helm upgrade does: the rendered Ignore comes back.
        api.objects[MUTATING + "kitpin"]["webhooks"][1]["failurePolicy"] = "Ignore"
        await until(lambda: api.policies(MUTATING + "kitpin")["pin-jobs.kitpin.dev"] == "Fail")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_loop_retries_errors_and_conflicts_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    api = FakeApi(chart_configs())
    api.fail_next = [
        kubeapi.UnreachableError("GET: no answer"),
        kubeapi.ForbiddenError("GET", "/x", 403, "Forbidden", "no"),
    ]
    # A conflict: someone changed the configuration between the read and the patch.
    real_get = api.get

    async def stale_get(path: str, *, timeout: float | None = None) -> dict[str, Any]:
        obj = await real_get(path, timeout=timeout)
        if path == MUTATING + "kitpin" and len(api.patches) == 0:
            api.objects[path]["metadata"]["resourceVersion"] = "7"
        return obj

    api.get = stale_get  # type: ignore[method-assign]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    armer = arming.Arming(api, settings("kitpin"), sleep=sleep)
    task = asyncio.create_task(armer.run(lambda: True))
    try:
        await until(lambda: armer.armed_once)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert set(api.policies(MUTATING + "kitpin").values()) == {"Fail"}
    assert slept[:3] == [0.001, 0.002, 0.004]  # three failures, doubling
    assert "needs get and patch" in caplog.text  # the 403 says which RBAC is missing


async def test_the_loop_waits_for_a_ready_endpoint_of_the_service() -> None:
    api = FakeApi(chart_configs())
    endpoints: list[dict[str, Any]] = []
    path = SLICES + "?labelSelector=kubernetes.io%2Fservice-name%3Dkitpin"
    api.on_get[path] = lambda: {"items": [{"endpoints": list(endpoints)}]}
    armer = arming.Arming(api, settings("kitpin", service="kitpin", namespace="kitpin"))
    task = asyncio.create_task(armer.run(lambda: True))
    try:
        await until(lambda: api.gets.count(path) >= 3)
        assert api.patches == []
        endpoints.append({"addresses": ["10.0.0.9"], "conditions": {"ready": True}})
        await until(lambda: armer.armed_once)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_service_needs_the_namespace() -> None:
    with pytest.raises(ValueError, match="namespace"):
        arming.Arming(FakeApi({}), settings("kitpin", service="kitpin"))


async def test_no_configuration_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi({})
    armer = arming.Arming(api, settings("gone"))
    task = asyncio.create_task(armer.run(lambda: True))
    try:
        await until(lambda: armer.passes >= 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert caplog.text.count("no webhook configuration named gone") == 1
    assert not armer.armed_once
