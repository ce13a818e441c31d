"""The policy CRDs (deploy/crds/) on the real apiserver: valid policies are stored with their
defaults, malformed ones are refused with a message naming the field (OpenAPI enums and
types, CEL contradiction rules), the printer columns show status, and what the apiserver
stores parses with ``policy.parse_policy``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import errors, policy
from harness.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"
CRDS = ("clustermodelkitpolicies.kitpin.dev", "modelkitpolicies.kitpin.dev")
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS)
    )
    return control_plane


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _cluster_policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": policy.API_VERSION,
        "kind": policy.CLUSTER_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def _create(cp: ControlPlane, obj: dict[str, Any], *, namespace: str | None = None) -> Any:
    args = ["create", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    return cp.kubectl(*args, input=yaml.safe_dump(obj), check=False)


@pytest.fixture
def cleanup(crds: ControlPlane) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        crds.kubectl("delete", "cmkp", name, "--ignore-not-found", "--wait=false", check=False)


FULL_SPEC: dict[str, Any] = {
    "mode": "enforce",
    "namespaceSelector": {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["ml", "search"]}],
    },
    "repositories": {
        "allowed": ["ghcr.io/acme/**", "registry.acme.example:5000/models/*"],
        "denied": ["ghcr.io/acme/experimental/**"],
    },
    "tags": {"denied": ["latest", "main"], "allowed": ["v*", "release-*"], "mode": "warn"},
    "artifacts": {
        "formats": ["kitops-modelkit", "modelpack"],
        "requiredLayers": ["model"],
        "licenses": {"allowed": ["Apache-2.0", "MIT"]},
    },
    "parents": {"mode": "audit"},
}


def test_full_cluster_policy_is_stored_with_defaults_and_parses(
    crds: ControlPlane, cleanup: list[str]
) -> None:
    name = _name("full")
    cleanup.append(name)
    result = _create(crds, _cluster_policy(name, FULL_SPEC))
    assert result.returncode == 0, result.stderr

    stored = json.loads(crds.kubectl("get", "cmkp", name, "-o", "json").stdout)
    assert stored["spec"]["parents"]["requireDigest"] is True  # schema default
    assert stored["spec"]["artifacts"]["licenses"]["allowUndeclared"] is False
    assert stored["spec"]["tags"]["requireDigest"] is False
    parsed = policy.parse_policy(stored)
    assert parsed.rules == (
        "repositories.denied",
        "repositories.allowed",
        "tags.denied",
        "tags.allowed",
        "artifacts.formats",
        "artifacts.requiredLayers",
        "artifacts.licenses",
        "parents.requireDigest",
    )
    assert parsed.generation == 1


def test_minimal_policies_get_mode_enforce(crds: ControlPlane, cleanup: list[str]) -> None:
    name = _name("minimal")
    cleanup.append(name)
    result = _create(crds, _cluster_policy(name, {"tags": {"denied": ["latest"]}}))
    assert result.returncode == 0, result.stderr
    stored = json.loads(crds.kubectl("get", "cmkp", name, "-o", "json").stdout)
    assert stored["spec"]["mode"] == "enforce"
    assert policy.parse_policy(stored).mode == "enforce"


def test_namespaced_policy_is_accepted_in_its_namespace(crds: ControlPlane, namespace: str) -> None:
    obj = {
        "apiVersion": policy.API_VERSION,
        "kind": policy.NAMESPACED_KIND,
        "metadata": {"name": "strict"},
        "spec": {"tags": {"requireDigest": True}},
    }
    result = _create(crds, obj, namespace=namespace)
    assert result.returncode == 0, result.stderr
    stored = json.loads(crds.kubectl("get", "mkp", "strict", "-n", namespace, "-o", "json").stdout)
    parsed = policy.parse_policy(stored)
    assert parsed.namespace == namespace
    assert parsed.rules == ("tags.requireDigest",)
    listed = crds.kubectl("get", "kitpin", "-n", namespace).stdout  # the category
    assert "modelkitpolicy.kitpin.dev/strict" in listed


def test_namespace_selector_is_refused_on_a_namespaced_policy(
    crds: ControlPlane, namespace: str
) -> None:
    obj = {
        "apiVersion": policy.API_VERSION,
        "kind": policy.NAMESPACED_KIND,
        "metadata": {"name": "selector"},
        "spec": {"namespaceSelector": {}, "tags": {"denied": ["latest"]}},
    }
    result = _create(crds, obj, namespace=namespace)
    assert result.returncode != 0
    assert 'unknown field "spec.namespaceSelector"' in result.stderr


MALFORMED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("bad-mode", {"mode": "Enforce"}, ("spec.mode", 'Unsupported value: "Enforce"')),
    (
        "bad-block-mode",
        {"tags": {"denied": ["latest"], "mode": "block"}},
        ("spec.tags.mode", "Unsupported value"),
    ),
    (
        "wrong-type-list",
        {"tags": {"denied": "latest"}},
        ("spec.tags.denied", "must be of type array"),
    ),
    (
        "wrong-type-bool",
        {"tags": {"requireDigest": "yes"}},
        ("spec.tags.requireDigest", "must be of type boolean"),
    ),
    (
        "unknown-field",
        {"tag": {"denied": ["latest"]}},
        ('unknown field "spec.tag"',),
    ),
    (
        "unknown-format",
        {"artifacts": {"formats": ["docker-image"]}},
        ("spec.artifacts.formats[0]", 'Unsupported value: "docker-image"'),
    ),
    (
        "unknown-layer",
        {"artifacts": {"requiredLayers": ["weights"]}},
        ("spec.artifacts.requiredLayers[0]", 'Unsupported value: "weights"'),
    ),
    (
        "tag-allowed-and-denied",
        {"tags": {"allowed": ["v1", "latest"], "denied": ["latest"]}},
        ("spec.tags.allowed", "deny wins"),
    ),
    (
        "repository-allowed-and-denied",
        {"repositories": {"allowed": ["ghcr.io/acme/**"], "denied": ["ghcr.io/acme/**"]}},
        ("spec.repositories.allowed", "deny wins"),
    ),
    (
        "weight-needs-modelpack",
        {"artifacts": {"formats": ["kitops-modelkit"], "requiredLayers": ["weight"]}},
        ("spec.artifacts.requiredLayers", "exist only in ModelPacks"),
    ),
    (
        "mcpb-needs-kitops",
        {"artifacts": {"formats": ["modelpack"], "requiredLayers": ["mcpb"]}},
        ("spec.artifacts.requiredLayers", "exist only in KitOps ModelKits"),
    ),
    ("empty-tags", {"tags": {}}, ("spec.tags", "tags states no rule")),
    (
        "empty-repositories",
        {"repositories": {"mode": "warn"}},
        ("spec.repositories", "repositories states no rule"),
    ),
    ("empty-artifacts", {"artifacts": {}}, ("spec.artifacts", "artifacts states no rule")),
    (
        "parents-off",
        {"parents": {"requireDigest": False}},
        ("spec.parents.requireDigest", "nothing to check"),
    ),
    (
        "pattern-without-host",
        {"repositories": {"allowed": ["acme"]}},
        ("spec.repositories.allowed[0]", "registry-host/repository-path"),
    ),
    (
        "pattern-uppercase",
        {"repositories": {"denied": ["ghcr.io/Acme/**"]}},
        ("spec.repositories.denied[0]", "registry-host/repository-path"),
    ),
    (
        "tag-pattern-with-slash",
        {"tags": {"denied": ["release/1"]}},
        ("spec.tags.denied[0]", "must be a tag pattern"),
    ),
    (
        "duplicate-tag",
        {"tags": {"denied": ["latest", "latest"]}},
        ("spec.tags.denied[1]", "Duplicate value"),
    ),
    (
        "empty-list",
        {"tags": {"denied": []}},
        ("spec.tags.denied", "should have at least 1 items"),
    ),
    (
        "licenses-without-allowed",
        {"artifacts": {"licenses": {"allowUndeclared": True}}},
        ("spec.artifacts.licenses.allowed", "Required value"),
    ),
    (
        "selector-in-without-values",
        {
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]},
            "tags": {"denied": ["latest"]},
        },
        ("spec.namespaceSelector.matchExpressions[0].values", "at least one value"),
    ),
    (
        "selector-bad-operator",
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "env", "operator": "Equals", "values": ["a"]}]
            },
            "tags": {"denied": ["latest"]},
        },
        ("spec.namespaceSelector.matchExpressions[0].operator", "Unsupported value"),
    ),
]


@pytest.mark.parametrize(("case", "spec", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_policy_is_refused_naming_the_field(
    crds: ControlPlane,
    cleanup: list[str],
    case: str,
    spec: dict[str, Any],
    expected: tuple[str, ...],
) -> None:
    name = _name(case)
    cleanup.append(name)
    result = _create(crds, _cluster_policy(name, spec))
    assert result.returncode != 0, f"the apiserver accepted {spec}"
    for text in expected:
        assert text in result.stderr, result.stderr
    # What the apiserver refuses, kitpin's own parser (the validating webhook, `kitpin check`)
    # refuses too, so an offline file never passes `kitpin check` and then fails to apply.
    with pytest.raises(errors.ConfigError):
        policy.parse_policy(_cluster_policy(name, spec))


def test_printer_columns_show_mode_rules_violations_and_status(
    crds: ControlPlane, cleanup: list[str]
) -> None:
    name = _name("columns")
    cleanup.append(name)
    spec = {"mode": "warn", "tags": {"denied": ["latest"], "requireDigest": True}}
    assert _create(crds, _cluster_policy(name, spec)).returncode == 0

    stored = json.loads(crds.kubectl("get", "cmkp", name, "-o", "json").stdout)
    parsed = policy.parse_policy(stored)
    violation = policy.Violation(
        policy=parsed.ref,
        rule=policy.Rule.TAGS_DENIED,
        reason=policy.Reason.TAG_DENIED,
        mode="warn",
        path="/spec/containers/0/env/0/value",
        where='container "main" env MODELKIT_REF',
        reference="ghcr.io/acme/model:latest",
        message="...",
    )
    status = policy.accepted_status(parsed, now=NOW)
    status |= policy.record_violations(
        None, [violation, violation], object_ref="Pod/web", namespace="ml", now=NOW
    )
    crds.kubectl(
        "patch",
        "cmkp",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )

    table = crds.kubectl("get", "cmkp", name).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODE", "RULES", "VIOLATIONS", "READY", "AGE"]
    assert table[1].split()[:5] == [name, "warn", "2", "2", "True"]
    wide = crds.kubectl("get", "clustermodelkitpolicy", name, "-o", "wide").stdout
    assert "SUMMARY" in wide.splitlines()[0]
    assert "tags: deny latest, digest required" in wide

    stored = json.loads(crds.kubectl("get", "cmkp", name, "-o", "json").stdout)
    assert stored["status"]["violationsByRule"] == {"tags.denied": 2}
    assert stored["status"]["recentViolations"][0]["object"] == "Pod/web"
    assert stored["status"]["conditions"][0]["reason"] == "Accepted"


def test_status_is_a_subresource(crds: ControlPlane, cleanup: list[str]) -> None:
    name = _name("subresource")
    cleanup.append(name)
    obj = _cluster_policy(name, {"tags": {"denied": ["latest"]}})
    obj["status"] = {"violations": 99}
    assert _create(crds, obj).returncode == 0
    stored = json.loads(crds.kubectl("get", "cmkp", name, "-o", "json").stdout)
    assert "status" not in stored or "violations" not in stored["status"]


def test_kubectl_explain_documents_the_fields(crds: ControlPlane) -> None:
    explained = crds.kubectl("explain", "cmkp.spec.tags.requireDigest").stdout
    assert "refused instead of being pinned" in explained
    explained = crds.kubectl("explain", "mkp.spec.parents").stdout
    assert "KitOps issue #899" in explained
