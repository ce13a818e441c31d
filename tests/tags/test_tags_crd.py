"""deploy/crds/kitpin.dev_modelkittags.yaml is a well-formed CRD that agrees with
controller/tags/model.py: names, the status subresource, the immutable spec, printer columns,
and a status schema that holds everything wire.status_to_wire writes, within its limits
(no apiserver needed; as tests/policy/test_policy_crds.py checks the policy CRDs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.tags import model, wire
from tests.tags.tagfakes import at, deployment, digest, key

CRD_PATH = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "kitpin.dev_modelkittags.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())


def _version() -> dict[str, Any]:
    (version,) = CRD["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def _schema() -> dict[str, Any]:
    schema = _version()["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def test_names_scope_and_version() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    assert CRD["metadata"]["name"] == f"{model.PLURAL}.{model.GROUP}"
    assert CRD["spec"]["group"] == model.GROUP
    assert CRD["spec"]["scope"] == "Cluster"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        model.KIND,
        model.PLURAL,
        "modelkittag",
        ["mkt"],
    )
    assert names["listKind"] == "ModelKitTagList"
    assert names["categories"] == ["kitpin"]
    version = _version()
    assert version["name"] == model.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_the_spec_is_immutable_and_required() -> None:
    schema = _schema()
    assert schema["required"] == ["spec"]
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["registry", "repository", "tag"]
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf" and "immutable" in rule["message"]
    props = spec["properties"]
    assert props["registry"]["maxLength"] == props["repository"]["maxLength"] == 255
    assert props["tag"]["maxLength"] == 128
    assert set(props) == set(wire.new_object(key(), _resolved())["spec"])


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in _version()["additionalPrinterColumns"]}
    assert list(columns) == [
        "Reference",
        "Digest",
        "Moves",
        "Last Move",
        "In Use",
        "Age",
        "First Seen",
        "Last Checked",
    ]
    assert columns["Reference"]["jsonPath"] == ".status.reference"
    assert columns["Digest"]["jsonPath"] == ".status.shortDigest"
    assert columns["Moves"]["jsonPath"] == ".status.moves" and columns["Moves"]["type"] == "integer"
    assert columns["Last Move"]["jsonPath"] == ".status.lastMoved"
    assert columns["Last Move"]["type"] == "date"
    assert columns["In Use"]["jsonPath"] == ".status.inUse"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert {n for n, c in columns.items() if c.get("priority") == 1} == {
        "First Seen",
        "Last Checked",
    }
    status = _schema()["properties"]["status"]["properties"]
    for column in columns.values():
        path = column["jsonPath"].split(".")[1:]
        if path[0] == "status":
            node: dict[str, Any] = {"properties": status}
            for step in path[1:]:
                node = node["properties"][step]
            assert node["type"] in ("string", "integer"), column


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "type" in node:
            found.append((path, node))
        for name, child in node.get("properties", {}).items():
            found.extend(_walk(child, f"{path}.{name}"))
        if "items" in node:
            found.extend(_walk(node["items"], f"{path}[]"))
    return found


def test_structural_every_field_typed_and_documented() -> None:
    for path, node in _walk(_schema()):
        assert node["type"] in ("object", "array", "string", "integer", "boolean"), path
        if node["type"] == "array":
            assert "items" in node and "maxItems" in node, f"{path}: arrays are bounded"
        if node["type"] == "string" and node.get("format") != "date-time" and "enum" not in node:
            if path.startswith((".spec", ".status")):
                assert "maxLength" in node, f"{path}: strings are bounded"
        if path.startswith((".spec", ".status")) and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description (kubectl explain shows it)"


def test_list_map_keys_are_required_fields() -> None:
    for path, node in _walk(_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            for k in node["x-kubernetes-list-map-keys"]:
                assert k in node["items"]["required"], path


def test_limits_match_the_model() -> None:
    status = _schema()["properties"]["status"]["properties"]
    assert status["history"]["maxItems"] == model.HISTORY_KEPT
    assert status["digests"]["maxItems"] == model.DIGESTS_KEPT
    assert (
        status["digests"]["items"]["properties"]["workloads"]["maxItems"] == model.WORKLOADS_LISTED
    )
    assert status["conditions"]["maxItems"] >= len(model.ConditionType.ALL)
    assert status["shortDigest"]["maxLength"] == model.SHORT_DIGEST_LENGTH
    assert status["reference"]["maxLength"] >= 255 + 255 + 128 + 2
    seen_by = status["firstSeen"]["properties"]["seenBy"]["enum"]
    assert seen_by == list(model.SEEN_BY)
    assert status["history"]["items"]["properties"]["seenBy"]["enum"] == list(model.SEEN_BY)


def _resolved() -> model.Resolved:
    return model.Resolved(digest=digest("a"), at=at(0), seen_by="admission")


def _fits(value: Any, schema: dict[str, Any], path: str) -> None:
    """``value`` is valid under ``schema`` for the keywords this CRD uses."""
    kind = schema["type"]
    if value is None:
        return  # a merge patch's null removes the field
    if kind == "object":
        assert isinstance(value, dict), path
        assert set(schema.get("required", ())) <= set(value), path
        for name, child in value.items():
            assert name in schema["properties"], f"{path}.{name} is not in the schema"
            _fits(child, schema["properties"][name], f"{path}.{name}")
    elif kind == "array":
        assert isinstance(value, list) and len(value) <= schema["maxItems"], path
        for i, item in enumerate(value):
            _fits(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), path
        assert len(value) <= schema.get("maxLength", len(value)), path
        if "enum" in schema:
            assert value in schema["enum"], path
    elif kind == "integer":
        assert isinstance(value, int) and value >= schema.get("minimum", value), path


def test_what_the_model_writes_fits_the_schema() -> None:
    a, b = digest("a"), digest("b")
    observations: list[model.Observation] = [
        model.Resolved(digest=a, at=at(0), seen_by="admission", workload=deployment("w0")),
        *[
            model.Resolved(digest=digest(str(i)), at=at(i), seen_by="watch", immutable=True)
            for i in range(1, 30)
        ],
        *[
            model.Resolved(digest=b, at=at(100), seen_by="admission", workload=deployment(f"d{i}"))
            for i in range(60)
        ],
        model.Missing(digest=a, at=at(200)),
        model.Checked(at=at(300)),
    ]
    status = model.apply_all(None, observations, now=at(300))
    assert status is not None
    doc = wire.status_to_wire(status, key(repository="r" * 255, tag="t" * 128))
    _fits(doc, _schema()["properties"]["status"], ".status")
    assert {c["type"] for c in doc["conditions"]} == set(model.ConditionType.ALL)
    assert any(c["status"] == "True" for c in doc["conditions"])
    _fits(wire.new_object(key(), _resolved())["spec"], _schema()["properties"]["spec"], ".spec")
