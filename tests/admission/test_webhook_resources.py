"""Which resources kitpin registers handlers for: the core kinds (PodTemplates included), the
shipped custom resources by group and kind, the extra sites; and kopf's selection of them."""

from __future__ import annotations

import kopf
from kopf._cogs.structs import references

from controller import metrics, sites
from controller.admission import decide, pinning, webhook
from tests.admission import kopf_running, reviews
from tests.admission.pinning_fakes import FakeResolver


def test_podtemplates_and_every_shipped_default_are_registered() -> None:
    assert webhook.WebhookResource(group="", version="v1", plural="podtemplates") in (
        webhook.BUILTIN_RESOURCES
    )
    kinds = {(r.group, r.kind) for r in webhook.DEFAULT_RESOURCES}
    assert kinds == {(s.group, s.kind) for s in sites.DEFAULT_SITES.values()}
    assert webhook.handler_ids(
        webhook.WebhookResource(group="serving.kserve.io", kind="LLMInferenceService")
    ) == (
        "pin-llminferenceservice-serving-kserve-io",
        "check-llminferenceservice-serving-kserve-io",
    )
    ids = [webhook.handler_ids(r) for r in webhook.BUILTIN_RESOURCES]
    assert len(set(ids)) == len(ids)


def test_an_extra_site_replacing_a_default_reuses_its_handler() -> None:
    mine = sites.ExtraSite(group="ray.io", kind="RayJob", pod_specs=("/spec/x",))
    other = sites.ExtraSite(group="ml.example.com", kind="Trainer", pod_specs=("/spec/x",))
    assert webhook.extra_resources([mine, other, other]) == [
        webhook.WebhookResource(group="ml.example.com", kind="Trainer")
    ]


def test_resources_are_exactly_what_the_settings_read() -> None:
    assert webhook.resources(sites.SitesSettings()) == list(webhook.BUILTIN_RESOURCES)
    off = sites.SitesSettings(
        disabled_defaults=("rayjobs.ray.io",),
        extra_sites=(sites.ExtraSite(group="g.example.com", kind="K", paths=("spec.m",)),),
    )
    got = webhook.resources(off)
    assert webhook.WebhookResource(group="ray.io", kind="RayJob") not in got
    assert got[-1] == webhook.WebhookResource(group="g.example.com", kind="K")
    assert len(got) == len(webhook.BUILTIN_RESOURCES)  # one out, one in


async def test_kopf_serves_a_shipped_default_in_a_version_that_is_not_preferred() -> None:
    """kopf's selector without a version matches only a group's preferred version (v1beta1,
    InferenceService's, in serving.kserve.io); the shipped defaults are registered with a
    filter on group and kind, so kopf serves an LLMInferenceService v1alpha2 too."""
    registry = kopf.OperatorRegistry()
    resolver = FakeResolver()
    engine = pinning.Engine(resolver)
    admission = decide.Admission(engine, metrics=metrics.Metrics())
    webhook.register(registry, admission, resources=webhook.BUILTIN_RESOURCES)
    llm = references.Resource(
        group="serving.kserve.io",
        version="v1alpha2",
        plural="llminferenceservices",
        kind="LLMInferenceService",
        namespaced=True,
        preferred=False,
    )
    obj = {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": "ns"},
        "spec": {"model": {"uri": "kit://reg.example.com/llama:1"}},
    }
    data = reviews.review(
        obj,
        kind={"group": "serving.kserve.io", "version": "v1alpha2", "kind": "LLMInferenceService"},
        resource={
            "group": "serving.kserve.io",
            "version": "v1alpha2",
            "resource": "llminferenceservices",
        },
    )
    async with kopf_running.webhook_fn(registry, (llm,)) as fn:
        answer = await fn(data, webhook="pin-llminferenceservice-serving-kserve-io")
    response = answer["response"]
    assert response["allowed"] and "patch" in response
    assert resolver.calls == [("reg.example.com/llama:1", None)]
