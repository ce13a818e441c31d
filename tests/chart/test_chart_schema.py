"""values.schema.json: a typo or a wrong value fails the render instead of being ignored."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from harness import chart as render

pytestmark = pytest.mark.integration

REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "a typo at the top level": ({"replicas": 3}, "replicas"),
    "a typo in a nested block": ({"webhook": {"failurPolicy": "Ignore"}}, "failurPolicy"),
    "a typo in the settings": ({"settings": {"cache": {"ttl": 30}}}, "ttl"),
    "a typo in an extra site": (
        {
            "settings": {
                "sites": {
                    "extra": [{"group": "g.io", "kind": "K", "plural": "ks", "path": ["spec.a"]}]
                }
            }
        },
        "path",
    ),
    "an unknown failure policy": ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
    "a timeout above the apiserver's limit": (
        {"webhook": {"timeoutSeconds": 31}},
        "timeoutSeconds",
    ),
    "an unknown mode": ({"settings": {"mode": "pin-everything"}}, "mode"),
    "an extra site without its plural": (
        {"settings": {"sites": {"extra": [{"group": "g.io", "kind": "K", "paths": ["spec.a"]}]}}},
        "plural",
    ),
    "a malformed image digest": ({"image": {"digest": "sha256:abc"}}, "digest"),
    "a typo in clientAuth": ({"clientAuth": {"enable": True}}, "enable"),
    "a probe port out of range": ({"clientAuth": {"probePort": 70000}}, "probePort"),
    "a typo in the server settings": ({"settings": {"server": {"drain": 5}}}, "drain"),
    "a negative drain": ({"settings": {"server": {"drainSeconds": -1}}}, "drainSeconds"),
}


@pytest.mark.parametrize(("values", "field"), list(REJECTED.values()), ids=list(REJECTED))
def test_schema_rejects(values: dict[str, Any], field: str) -> None:
    result = render.template(values)
    assert result.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def _objects_without_closed_properties(node: Any, where: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                found.append(where or "(root)")
        for key, value in node.items():
            found += _objects_without_closed_properties(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects_without_closed_properties(value, f"{where}[{i}]")
    return found


def test_every_object_with_properties_is_closed() -> None:
    schema = json.loads((render.CHART_DIR / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert _objects_without_closed_properties(schema) == []


def _keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    out = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        out.add(path)
        out |= _keys(value, path)
    return out


def _schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out.add(path)
        out |= _schema_keys(sub, path)
    return out


FREE_FORM = ("resources.", "podSecurityContext.", "securityContext.", "webhook.namespaceSelector.")


def _leaf_lines(text: str) -> list[tuple[str, int]]:
    """(dotted path, line index) of every ``key: value`` line of a block-style YAML file."""
    stack: list[tuple[int, str]] = []
    leaves = []
    for i, line in enumerate(text.splitlines()):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if rest and not rest.startswith("#"):
            leaves.append((path, i))
    return leaves


def test_every_default_value_is_in_the_schema_and_documented() -> None:
    text = (render.CHART_DIR / "values.yaml").read_text()
    schema = json.loads((render.CHART_DIR / "values.schema.json").read_text())
    missing = {k for k in _keys(yaml.safe_load(text)) if not k.startswith(FREE_FORM)}
    assert missing - _schema_keys(schema) == set()
    lines = text.splitlines()
    undocumented = [
        path
        for path, i in _leaf_lines(text)
        if not path.startswith(FREE_FORM) and not lines[i - 1].lstrip().startswith("#")
    ]
    assert undocumented == []
