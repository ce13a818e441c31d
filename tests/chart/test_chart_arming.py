"""Arming in the chart (docs/install.md): webhooks rendered fail-open with the policy asked
for in an annotation, the Deployment's `kitpin run --arm-*` flags (parsed by kitpin's own
parser), the RBAC limited to the release's configurations; and `helm test` proving a pin
with test.modelKit. The real apiserver: tests/e2e/test_chart_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest

from controller.admission import arming
from controller.cli import app
from harness import chart as render

pytestmark = pytest.mark.integration

KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def _args(docs: list[dict[str, Any]]) -> Any:
    (container,) = render.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return app.build_parser().parse_args(container["args"])


def test_webhooks_are_rendered_fail_open_with_the_policy_in_an_annotation(
    default_docs: list[dict[str, Any]],
) -> None:
    for kind in KINDS:
        config = render.one(default_docs, kind)
        assert config["metadata"]["annotations"][arming.POLICY_ANNOTATION] == "Fail"
        assert {w["failurePolicy"] for w in config["webhooks"]} == {"Ignore"}
        # What kitpin arms them with: the annotation.
        assert arming.plan(config, "Ignore").to_arm == tuple(w["name"] for w in config["webhooks"])


def test_the_deployment_arms_its_own_configurations(default_docs: list[dict[str, Any]]) -> None:
    args = _args(default_docs)
    assert arming.parse_names(args.arm_webhooks) == ("kitpin",)
    assert (args.arm_failure_policy, args.arm_service) == ("Fail", "kitpin")
    assert {render.one(default_docs, k)["metadata"]["name"] for k in KINDS} == {"kitpin"}


def test_rbac_reaches_only_the_releases_configurations_and_its_endpointslices(
    default_docs: list[dict[str, Any]],
) -> None:
    rules = render.one(default_docs, "ClusterRole")["rules"]
    admission = [r for r in rules if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert admission == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": ["kitpin"],
            "verbs": ["get", "patch"],
        }
    ]
    role = render.one(default_docs, "Role", "kitpin-arming")
    assert role["metadata"]["namespace"] == "kitpin"
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
    ]
    binding = render.one(default_docs, "RoleBinding", "kitpin-arming")
    assert binding["roleRef"]["name"] == "kitpin-arming"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kitpin", "namespace": "kitpin"}
    ]


def test_with_failure_policy_ignore_nothing_is_armed() -> None:
    docs = render.render({"webhook": {"failurePolicy": "Ignore"}})
    for kind in KINDS:
        config = render.one(docs, kind)
        assert config["metadata"]["annotations"][arming.POLICY_ANNOTATION] == "Ignore"
        assert {w["failurePolicy"] for w in config["webhooks"]} == {"Ignore"}
    args = _args(docs)
    assert (args.arm_webhooks, args.arm_service) == ([], None)
    rules = render.one(docs, "ClusterRole")["rules"]
    assert not [r for r in rules if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert not render.find(docs, "Role", "kitpin-arming")


def test_the_names_follow_the_release() -> None:
    docs = render.render(release="ml-kitpin", namespace="platform")
    args = _args(docs)
    assert (args.arm_webhooks, args.arm_service) == (["ml-kitpin"], "ml-kitpin")
    for kind in KINDS:
        assert render.one(docs, kind)["metadata"]["name"] == "ml-kitpin"
    (rule,) = [
        r
        for r in render.one(docs, "ClusterRole")["rules"]
        if r["apiGroups"] == ["admissionregistration.k8s.io"]
    ]
    assert rule["resourceNames"] == ["ml-kitpin"]


def test_user_annotations_stay_and_the_policy_annotation_is_the_charts() -> None:
    docs = render.render(
        {
            "webhook": {
                "annotations": {
                    "example.com/owner": "platform",
                    arming.POLICY_ANNOTATION: "Ignore",  # the value decides, not this
                }
            }
        }
    )
    for kind in KINDS:
        assert render.one(docs, kind)["metadata"]["annotations"] == {
            "example.com/owner": "platform",
            arming.POLICY_ANNOTATION: "Fail",
        }


# --------------------------------------------------------------------------- helm test


def test_helm_test_without_a_modelkit_attempts_no_pin(default_docs: list[dict[str, Any]]) -> None:
    pod = render.one(default_docs, "Pod")
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert not {n for n in env if n.startswith("KITPIN_TEST_")}
    assert not render.find(default_docs, "ServiceAccount", "kitpin-test")


def test_helm_test_with_a_modelkit_dry_runs_a_deployment_with_its_own_rbac() -> None:
    values = {
        "test": {"modelKit": "registry.example.com/ml/llama:prod", "namespace": "ml"},
        "webhook": {"objectSelector": {"matchLabels": {"team": "ml"}}},
    }
    docs = render.render(values)
    hooks = [
        render.one(docs, "ServiceAccount", "kitpin-test"),
        render.one(docs, "Role", "kitpin-test"),
        render.one(docs, "RoleBinding", "kitpin-test"),
        render.one(docs, "Pod", "kitpin-test"),
    ]
    for doc in hooks:
        assert doc["metadata"]["annotations"]["helm.sh/hook"] == "test"
    sa, role, binding, pod = hooks
    assert sa["metadata"]["namespace"] == "kitpin"
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml"
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}
    ]
    assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0  # before the Pod
    assert pod["spec"]["serviceAccountName"] == "kitpin-test"
    assert pod["spec"]["automountServiceAccountToken"] is True
    (check,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in check["env"]}
    assert env["KITPIN_TEST_MODELKIT"] == "registry.example.com/ml/llama:prod"
    assert env["KITPIN_TEST_NAMESPACE"] == "ml"
    assert env["KITPIN_TEST_LABELS"] == '{"team":"ml"}'
    script = check["args"][0]
    compile(script, "helm-test", "exec")
    assert "dryRun=All" in script


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"test": {"modelKit": "r.example/a/b:c", "namespace": "kitpin"}}, "never admitted"),
        ({"test": {"modelKit": "r.example/a/b:c", "namespace": "kube-system"}}, "never admitted"),
        (
            {
                "test": {"modelKit": "r.example/a/b:c", "namespace": "argo"},
                "settings": {"ignoredNamespaces": ["argo"]},
            },
            "never admitted",
        ),
        ({"test": {"modelKit": "r.example/a/b@sha256:" + "0" * 64}}, "modelKit"),
    ],
)
def test_helm_test_values_that_cannot_prove_a_pin(values: dict[str, Any], message: str) -> None:
    result = render.template(values)
    assert result.returncode != 0
    assert message in result.stderr
