"""The webhook configurations: one webhook per resource kitpin registers a handler for, at
the handler's path, with the ops baseline (failurePolicy, timeout, sideEffects,
reinvocation, selectors)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from controller import sites
from controller.admission import webhook
from controller.sites import defaults
from harness import chart as render

pytestmark = pytest.mark.integration

EXTRA_SITES: list[dict[str, Any]] = [
    {
        "group": "ml.example.com",
        "kind": "ModelDeployment",
        "plural": "modeldeployments",
        "versions": ["v1", "v1beta1"],
        "paths": ["spec.models[*].source"],
        "prefix": "kit://",
    },
    {  # a second path on the same kind: one webhook, not two
        "group": "ml.example.com",
        "kind": "ModelDeployment",
        "plural": "modeldeployments",
        "paths": ["spec.fallback"],
    },
    {
        "group": "",
        "kind": "ConfigMap",
        "plural": "configmaps",
        "paths": ["data.model"],
        "scope": "Namespaced",
    },
]


POLICY_CHECKS = {f"/check-{plural}" for plural in webhook.POLICY_PLURALS.values()}


def _by_path(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["clientConfig"]["service"]["path"]: w for w in config["webhooks"]}


def _expected_paths(resources: list[webhook.WebhookResource]) -> tuple[set[str], set[str]]:
    pins, checks = set(), set()
    for resource in resources:
        pin, check = webhook.handler_ids(resource)
        pins.add(f"/{pin}")
        checks.add(f"/{check}")
    return pins, checks


def test_one_webhook_per_registered_handler_at_its_path(default_docs: list[dict[str, Any]]) -> None:
    pins, checks = _expected_paths(list(webhook.BUILTIN_RESOURCES))
    mutating = _by_path(render.one(default_docs, "MutatingWebhookConfiguration"))
    validating = _by_path(render.one(default_docs, "ValidatingWebhookConfiguration"))
    assert set(mutating) == pins
    assert set(validating) == checks | POLICY_CHECKS
    plurals = {(s.group, s.kind): defaults.plural(n) for n, s in sites.DEFAULT_SITES.items()}
    for resource in webhook.BUILTIN_RESOURCES:
        pin, check = webhook.handler_ids(resource)
        for w in (mutating[f"/{pin}"], validating[f"/{check}"]):
            # Shipped custom resources are registered by kind, every version (the chart
            # knows their plurals: kitpin.defaultSites).
            plural = resource.plural or plurals[(resource.group, str(resource.kind))]
            assert w["rules"] == [
                {
                    "apiGroups": [resource.group],
                    "apiVersions": [resource.version or "*"],
                    "resources": [
                        f"{plural}/{resource.subresource}" if resource.subresource else plural
                    ],
                    "operations": list(resource.operations),
                    "scope": "Namespaced",
                }
            ]


def test_ops_baseline_on_every_webhook(default_docs: list[dict[str, Any]]) -> None:
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = render.one(default_docs, kind)
        assert config["metadata"]["name"] == "kitpin"
        names = [w["name"] for w in config["webhooks"]]
        assert len(names) == len(set(names))
        for w in config["webhooks"]:
            assert w["name"].endswith(".kitpin.dev")
            # Fail-open as rendered; kitpin arms it to the annotation's Fail (test_chart_arming).
            assert w["failurePolicy"] == "Ignore"
            assert w["timeoutSeconds"] == 10
            assert w["sideEffects"] == "None"
            assert w["admissionReviewVersions"] == ["v1"]
            assert w["matchPolicy"] == "Equivalent"
            service = w["clientConfig"]["service"]
            assert (service["name"], service["namespace"], service["port"]) == (
                "kitpin",
                "kitpin",
                443,
            )
            assert "url" not in w["clientConfig"]
            if kind.startswith("Mutating"):
                assert w["reinvocationPolicy"] == "IfNeeded"
            else:
                assert "reinvocationPolicy" not in w
            assert "objectSelector" not in w


def test_namespace_selector_excludes_system_own_ignored_and_labelled_namespaces() -> None:
    docs = render.render(
        {
            "settings": {"ignoredNamespaces": ["argocd"]},
            "webhook": {
                "namespaceSelector": {
                    "matchLabels": {"kitpin.dev/enabled": "true"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["ml"]}],
                },
                "objectSelector": {"matchLabels": {"app": "x"}},
            },
        },
        namespace="platform",
    )
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for w in render.one(docs, kind)["webhooks"]:
            assert w["namespaceSelector"] == {
                "matchLabels": {"kitpin.dev/enabled": "true"},
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": [
                            "kube-system",
                            "kube-public",
                            "kube-node-lease",
                            "platform",
                            "argocd",
                        ],
                    },
                    {"key": "kitpin.dev/ignore", "operator": "NotIn", "values": ["true"]},
                    {"key": "tier", "operator": "In", "values": ["ml"]},
                ],
            }
            assert w["objectSelector"] == {"matchLabels": {"app": "x"}}
    settings_doc = render.one(docs, "ConfigMap", "kitpin-config")["data"]["settings.yaml"]
    assert "argocd" in settings_doc


def test_failure_policy_and_timeout_come_from_values() -> None:
    docs = render.render(
        {
            "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5},
            "settings": {"deadlineSeconds": 4.5},
        }
    )
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for w in render.one(docs, kind)["webhooks"]:
            assert (w["failurePolicy"], w["timeoutSeconds"]) == ("Ignore", 5)


def test_extra_sites_get_webhooks_at_kitpins_handler_ids() -> None:
    docs = render.render({"settings": {"sites": {"extra": EXTRA_SITES}}})
    parsed = [
        sites.ExtraSite.from_mapping({k: v for k, v in s.items() if k not in ("plural", "scope")})
        for s in EXTRA_SITES
    ]
    extra = webhook.extra_resources(parsed)
    assert len(extra) == 2
    pins, checks = _expected_paths([*webhook.BUILTIN_RESOURCES, *extra])
    mutating = _by_path(render.one(docs, "MutatingWebhookConfiguration"))
    validating = _by_path(render.one(docs, "ValidatingWebhookConfiguration"))
    assert set(mutating) == pins
    assert set(validating) == checks | POLICY_CHECKS
    assert "/pin-modeldeployment-ml-example-com" in mutating
    assert mutating["/pin-modeldeployment-ml-example-com"]["rules"] == [
        {
            "apiGroups": ["ml.example.com"],
            # The second entry of the kind lists no versions: kitpin reads it in any
            # version, so the webhook must be called for any.
            "apiVersions": ["*"],
            "resources": ["modeldeployments"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "*",
        }
    ]
    assert validating["/check-configmap"]["rules"][0] == {
        "apiGroups": [""],
        "apiVersions": ["*"],
        "resources": ["configmaps"],
        "operations": ["CREATE", "UPDATE"],
        "scope": "Namespaced",
    }


def test_validate_only_installs_no_mutating_webhook() -> None:
    docs = render.render({"settings": {"mode": "validate-only"}})
    assert not render.find(docs, "MutatingWebhookConfiguration")
    assert len(render.one(docs, "ValidatingWebhookConfiguration")["webhooks"]) == len(
        webhook.BUILTIN_RESOURCES
    ) + len(POLICY_CHECKS)


def test_pods_only_never_sends_workload_templates_to_the_mutating_webhook() -> None:
    docs = render.render({"settings": {"mode": "pods-only", "sites": {"extra": EXTRA_SITES[:1]}}})
    mutating = _by_path(render.one(docs, "MutatingWebhookConfiguration"))
    assert set(mutating) == {
        "/pin-pods",
        "/pin-pods-ephemeralcontainers",
        "/pin-inferenceservices",
        # Model URIs that reach Pods as a storage initializer's arguments: not templates.
        "/pin-llminferenceservice-serving-kserve-io",
        "/pin-modeldeployment-ml-example-com",
    }
    validating = _by_path(render.one(docs, "ValidatingWebhookConfiguration"))
    assert len(validating) == len(webhook.BUILTIN_RESOURCES) + 1 + len(POLICY_CHECKS)


def test_webhook_annotations_are_passed_through() -> None:
    docs = render.render({"webhook": {"annotations": {"example.com/owner": "platform"}}})
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert render.one(docs, kind)["metadata"]["annotations"] == {
            "example.com/owner": "platform",
            "kitpin.dev/failure-policy": "Fail",
        }


# --- the shipped custom resources (docs/sites.md) -------------------------------------------


def _resources(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = render.render({"settings": {"sites": values}})
    return {
        w["clientConfig"]["service"]["path"]: w["rules"][0]
        for w in render.one(docs, "ValidatingWebhookConfiguration")["webhooks"]
    }


def test_the_charts_defaults_are_kitpins() -> None:
    """kitpin.defaultSites lists controller/sites/defaults.py DEFAULT_SITES: same names,
    kinds, and pod-template flag (the owner rule's, which pods-only follows)."""
    helpers = (render.CHART_DIR / "templates" / "_helpers.tpl").read_text()
    block = helpers.split('define "kitpin.defaultSites"', 1)[1].split("{{- end -}}", 1)[0]
    listed = {
        name: (kind, template == "true")
        for name, kind, template in re.findall(
            r'\(dict "name" "([^"]+)" "kind" "([^"]+)" "template" (true|false)\)', block
        )
    }
    assert listed == {
        name: (site.kind, sites.is_template({"apiVersion": f"{site.group}/v1", "kind": site.kind}))
        for name, site in sites.DEFAULT_SITES.items()
    }
    assert list(listed) == list(sites.DEFAULT_SITES)


def test_a_disabled_default_gets_no_webhook_and_reaches_the_settings() -> None:
    rules = _resources({"disabledDefaults": ["rayjobs.ray.io", "jobs.batch.volcano.sh"]})
    assert "/check-rayjob-ray-io" not in rules
    assert "/check-job-batch-volcano-sh" not in rules
    assert rules["/check-raycluster-ray-io"]["resources"] == ["rayclusters"]
    docs = render.render({"settings": {"sites": {"disabledDefaults": ["rayjobs.ray.io"]}}})
    document = render.one(docs, "ConfigMap", "kitpin-config")["data"]["settings.yaml"]
    assert "disabledDefaults:\n  - rayjobs.ray.io" in document


def test_unknown_default_names_and_bad_uri_prefixes_fail_the_schema() -> None:
    for values in ({"disabledDefaults": ["rayjob.ray.io"]}, {"uriPrefixes": ["S3"]}):
        result = render.template({"settings": {"sites": values}})
        assert result.returncode != 0
        assert "values don't meet the specifications of the schema" in result.stderr


def test_an_extra_site_replaces_the_default_of_its_kind() -> None:
    rules = _resources(
        {
            "extra": [
                {
                    "group": "ray.io",
                    "kind": "RayJob",
                    "plural": "rayjobs",
                    "versions": ["v1"],
                    "podSpecs": ["/spec/submitterPodTemplate/spec"],
                }
            ]
        }
    )
    assert rules["/check-rayjob-ray-io"]["apiVersions"] == ["v1"]
    assert rules["/check-rayjob-ray-io"]["scope"] == "*"
    assert list(rules).count("/check-rayjob-ray-io") == 1


def test_pods_only_follows_the_template_rule_for_extra_sites() -> None:
    extra = [
        {"group": "ml.example.com", "kind": "Trainer", "plural": "trainers", "podSpecs": ["/s"]},
        {"group": "ml.example.com", "kind": "Server", "plural": "servers", "podSpecs": ["/s"]},
        {"group": "ml.example.com", "kind": "Server", "plural": "servers", "paths": ["spec.m"]},
    ]
    docs = render.render({"settings": {"mode": "pods-only", "sites": {"extra": extra}}})
    mutating = _by_path(render.one(docs, "MutatingWebhookConfiguration"))
    assert "/pin-trainer-ml-example-com" not in mutating  # pod specs only: a template
    assert "/pin-server-ml-example-com" in mutating  # paths too: pinned where written
    custom = sites.SitesSettings(
        extra_sites=tuple(
            sites.ExtraSite.from_mapping({k: v for k, v in e.items() if k != "plural"})
            for e in extra
        )
    )
    for kind, expected in (("Trainer", True), ("Server", False)):
        obj = {"apiVersion": "ml.example.com/v1", "kind": kind}
        assert sites.is_template(obj, custom) is expected
