"""The CRD files agree with each other and with controller/policy/ (no apiserver needed;
tests/e2e/test_policy_crd_e2e.py applies them to a real one)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from controller import policy

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CRD_DIR / name).read_text())
    assert isinstance(data, dict)
    return data


CLUSTER = _load("kitpin.dev_clustermodelkitpolicies.yaml")
NAMESPACED = _load("kitpin.dev_modelkitpolicies.yaml")


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema = _version(crd)["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def test_names_scope_and_version() -> None:
    for crd, kind, plural, short, scope in (
        (CLUSTER, policy.CLUSTER_KIND, "clustermodelkitpolicies", "cmkp", "Cluster"),
        (NAMESPACED, policy.NAMESPACED_KIND, "modelkitpolicies", "mkp", "Namespaced"),
    ):
        assert crd["metadata"]["name"] == f"{plural}.{policy.GROUP}"
        assert crd["spec"]["group"] == policy.GROUP
        assert crd["spec"]["scope"] == scope
        names = crd["spec"]["names"]
        assert (names["kind"], names["plural"], names["shortNames"]) == (kind, plural, [short])
        assert names["categories"] == ["kitpin"]
        version = _version(crd)
        assert version["name"] == policy.VERSION and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


def test_the_two_schemas_differ_only_in_namespace_selector_and_description() -> None:
    cluster = copy.deepcopy(_schema(CLUSTER))
    namespaced = copy.deepcopy(_schema(NAMESPACED))
    assert "namespaceSelector" in cluster["properties"]["spec"]["properties"]
    del cluster["properties"]["spec"]["properties"]["namespaceSelector"]
    del cluster["description"], namespaced["description"]
    assert cluster == namespaced
    assert (
        _version(CLUSTER)["additionalPrinterColumns"]
        == _version(NAMESPACED)["additionalPrinterColumns"]
    )


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in _version(CLUSTER)["additionalPrinterColumns"]}
    assert list(columns) == ["Mode", "Rules", "Violations", "Ready", "Age", "Summary"]
    assert columns["Mode"]["jsonPath"] == ".spec.mode"
    assert columns["Rules"]["jsonPath"] == ".status.ruleCount"
    assert columns["Violations"]["jsonPath"] == ".status.violations"
    assert columns["Summary"]["priority"] == 1


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "type" in node:
            found.append((path, node))
        for key, child in node.get("properties", {}).items():
            found.extend(_walk(child, f"{path}.{key}"))
        if "items" in node:
            found.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_every_spec_field_is_documented() -> None:
    spec = _schema(CLUSTER)["properties"]["spec"]
    for path, node in _walk(spec, ".spec"):
        if path.endswith("[]") or path.endswith("{}"):
            continue  # list items and map values are described by their list/map
        assert node.get("description"), f"{path} has no description (kubectl explain shows it)"


def test_enums_match_the_python_model() -> None:
    spec = _schema(CLUSTER)["properties"]["spec"]["properties"]
    assert spec["mode"]["enum"] == list(policy.MODES)
    assert spec["mode"]["default"] == policy.DEFAULT_MODE
    for block in ("repositories", "tags", "artifacts", "parents"):
        assert spec[block]["properties"]["mode"]["enum"] == list(policy.MODES)
    artifacts = spec["artifacts"]["properties"]
    assert artifacts["formats"]["items"]["enum"] == list(policy.MODEL_FORMATS)
    assert artifacts["requiredLayers"]["items"]["enum"] == list(policy.LAYER_KINDS)
    expressions = spec["namespaceSelector"]["properties"]["matchExpressions"]["items"]
    assert expressions["properties"]["operator"]["enum"] == [
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
    ]


def test_limits_match_the_python_model() -> None:
    spec = _schema(CLUSTER)["properties"]["spec"]["properties"]
    for block in ("repositories", "tags"):
        for key in ("allowed", "denied"):
            assert spec[block]["properties"][key]["maxItems"] == policy.MAX_PATTERNS
    repo_item = spec["repositories"]["properties"]["allowed"]["items"]
    assert repo_item["maxLength"] == policy.MAX_REPOSITORY_PATTERN_LENGTH
    tag_item = spec["tags"]["properties"]["denied"]["items"]
    assert tag_item["maxLength"] == policy.MAX_TAG_PATTERN_LENGTH
    licenses = spec["artifacts"]["properties"]["licenses"]["properties"]["allowed"]
    assert licenses["maxItems"] == policy.MAX_LICENSES
    assert licenses["items"]["maxLength"] == policy.MAX_LICENSE_LENGTH
    status = _schema(CLUSTER)["properties"]["status"]["properties"]
    assert status["recentViolations"]["maxItems"] >= policy.RECENT_VIOLATIONS_KEPT
    assert status["summary"]["maxLength"] >= policy.SUMMARY_LENGTH


def test_status_builders_fit_the_status_schema() -> None:
    status_schema = _schema(CLUSTER)["properties"]["status"]["properties"]
    from policy_fakes import NOW, cluster, evaluate, evidence

    p = cluster("prod", {"tags": {"denied": ["latest"]}}, generation=1)
    (v,) = evaluate([p], evidence("r.io/m")).violations
    status = policy.accepted_status(p, now=NOW) | policy.record_violations(
        None, [v], object_ref="Pod/a", namespace="ml", now=NOW
    )
    assert set(status) <= set(status_schema)
    recent_fields = status_schema["recentViolations"]["items"]["properties"]
    assert set(status["recentViolations"][0]) <= set(recent_fields)
    condition_fields = status_schema["conditions"]["items"]["properties"]
    assert set(status["conditions"][0]) <= set(condition_fields)
