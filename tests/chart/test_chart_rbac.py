"""RBAC: exactly the rules the chart README's table explains, nothing that can enumerate
Secrets, and kitpin.dev rules derived from the CRDs the chart ships."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import chart as render

pytestmark = pytest.mark.integration

POLICY_PLACEHOLDERS = {"every CRD in `crds/`", "`<each>/status`"}
TAG_RECORDS_RULE = {
    "apiGroups": ["kitpin.dev"],
    "resources": ["modelkittags"],
    "verbs": ["get", "create"],
}
WORKLOAD_RULES = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
        "verbs": ["get"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["get"]},
]


def _derived(rule: dict[str, Any]) -> bool:
    """The kitpin.dev rules derived from the CRDs (list/watch, status patch)."""
    return rule["apiGroups"] == ["kitpin.dev"] and rule != TAG_RECORDS_RULE


CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  scope: Cluster
  names: {{plural: {plural}, singular: {singular}, kind: {kind}, listKind: {kind}List}}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def _readme_table() -> list[tuple[frozenset[str], str, frozenset[str]]]:
    """(api groups, resources cell, verbs) for each row of the README's RBAC table."""
    text = (render.CHART_DIR / "README.md").read_text()
    section = text.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("API group", "---") or set(cells[0]) <= {"-"}:
            continue
        groups = frozenset(g.strip('`"') for g in re.findall(r"`[^`]*`", cells[0]))
        verbs = frozenset(v.strip("`") for v in re.findall(r"`[^`]*`", cells[2]))
        rows.append((groups, cells[1], verbs))
    return rows


TAGS_ON: dict[str, Any] = {
    "settings": {"tags": {"records": True}, "drift": {"enabled": True}},
    "rbac": {"rollForward": True},
}
"""Tag records, the drift watch and roll-forward's RBAC: every rule the README lists (records
and the watch are on by default, roll-forward's update off: docs/tags.md)."""


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = render.one(docs, "ClusterRole")["rules"]
    return rules


def test_rules_are_the_readme_table() -> None:
    documented = {
        (groups, cell.strip("`"), verbs)
        for groups, cell, verbs in _readme_table()
        if cell not in POLICY_PLACEHOLDERS
    }
    rendered = {
        (frozenset(r["apiGroups"]), resource, frozenset(r["verbs"]))
        for r in _rules(render.render(TAGS_ON))
        if not _derived(r)
        for resource in r["resources"]
    }
    assert rendered == documented
    placeholders = {
        (groups, cell, verbs)
        for groups, cell, verbs in _readme_table()
        if cell in POLICY_PLACEHOLDERS
    }
    assert placeholders == {
        (frozenset({"kitpin.dev"}), "every CRD in `crds/`", frozenset({"list", "watch"})),
        (frozenset({"kitpin.dev"}), "`<each>/status`", frozenset({"patch"})),
    }


def test_policy_rules_name_the_crds_the_chart_ships(default_docs: list[dict[str, Any]]) -> None:
    plurals = sorted(
        doc["spec"]["names"]["plural"]
        for path in (render.CHART_DIR / "crds").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
        and doc.get("kind") == "CustomResourceDefinition"
        and doc["spec"]["group"] == "kitpin.dev"
    )
    kitpin_rules = [r for r in _rules(default_docs) if _derived(r)]
    if not plurals:
        assert kitpin_rules == []
        return
    assert kitpin_rules == [
        {"apiGroups": ["kitpin.dev"], "resources": plurals, "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kitpin.dev"],
            "resources": [f"{p}/status" for p in plurals],
            "verbs": ["patch"],
        },
    ]


def test_secrets_are_only_read_by_name(default_docs: list[dict[str, Any]]) -> None:
    for rule in _rules(default_docs):
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"update", "delete", "deletecollection"} & set(rule["verbs"])
    no_secrets = _rules(render.render({"rbac": {"readPullSecrets": False}}))
    assert not any({"secrets", "serviceaccounts"} & set(r["resources"]) for r in no_secrets)


def test_binding_and_optional_rbac(default_docs: list[dict[str, Any]]) -> None:
    binding = render.one(default_docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "kitpin"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kitpin", "namespace": "kitpin"}
    ]
    docs = render.render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "own"}}
    )
    assert not render.find(docs, "ClusterRole") and not render.find(docs, "ServiceAccount")
    assert render.one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "own"


def test_policy_rules_follow_the_crds_in_the_chart(tmp_path: Path) -> None:
    chart = tmp_path / "kitpin"
    shutil.copytree(render.CHART_DIR, chart)
    for old in (chart / "crds").glob("*.yaml"):
        old.unlink()
    (chart / "crds" / "policies.yaml").write_text(
        CRD.format(
            plural="modelkitpolicies",
            singular="modelkitpolicy",
            kind="ModelKitPolicy",
            group="kitpin.dev",
        )
        + "---\n"
        + CRD.format(plural="widgets", singular="widget", kind="Widget", group="example.com")
    )
    (chart / "crds" / "exceptions.yaml").write_text(
        CRD.format(
            plural="modelkitexceptions",
            singular="modelkitexception",
            kind="ModelKitException",
            group="kitpin.dev",
        )
    )
    rules = _rules(render.render(TAGS_ON, chart=chart))
    kitpin_rules = {
        tuple(r["verbs"]): r["resources"] for r in rules if r["apiGroups"] == ["kitpin.dev"]
    }
    assert kitpin_rules == {
        ("list", "watch"): ["modelkitexceptions", "modelkitpolicies"],
        ("patch",): ["modelkitexceptions/status", "modelkitpolicies/status"],
        ("get", "create"): ["modelkittags"],
    }
    assert not any("widgets" in r["resources"] for r in rules)


def test_tag_records_and_drift_watch_rbac() -> None:
    default_docs = render.render(TAGS_ON)
    rules = _rules(default_docs)
    assert TAG_RECORDS_RULE in rules
    for rule in WORKLOAD_RULES:
        assert rule in rules
    role = render.one(default_docs, "Role", "kitpin-leader-election")
    assert role["metadata"] == {
        **role["metadata"],
        "name": "kitpin-leader-election",
        "namespace": "kitpin",
    }
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kitpin-drift-watch"],
            "verbs": ["get", "patch"],
        },
    ]
    binding = render.one(default_docs, "RoleBinding", "kitpin-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kitpin-leader-election",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kitpin", "namespace": "kitpin"}
    ]
    container = render.one(default_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )


def test_drift_watch_off_drops_its_rbac() -> None:
    off = render.render({"settings": {"tags": {"records": False}, "drift": {"enabled": False}}})
    rules = _rules(off)
    assert TAG_RECORDS_RULE not in rules
    assert not any(rule in rules for rule in WORKLOAD_RULES)
    # Then the only Role is arming's (tests/chart/test_chart_arming.py).
    assert not render.find(off, "Role", "kitpin-leader-election")
    assert not render.find(off, "RoleBinding", "kitpin-leader-election")
    docs = render.render({"settings": {"tags": {"records": True}, "drift": {"enabled": False}}})
    rules = _rules(docs)
    assert TAG_RECORDS_RULE in rules
    assert not any(rule in rules for rule in WORKLOAD_RULES)
    assert not render.find(docs, "Role", "kitpin-leader-election")
    assert not render.find(docs, "RoleBinding", "kitpin-leader-election")
    no_records = _rules(render.render({"settings": {"tags": {"records": False}}}))
    assert TAG_RECORDS_RULE not in no_records
    assert not any(rule in no_records for rule in WORKLOAD_RULES)


def test_roll_forward_update_is_granted_only_when_asked(default_docs: list[dict[str, Any]]) -> None:
    def updates(docs: list[dict[str, Any]]) -> set[str]:
        return {
            resource
            for rule in _rules(docs)
            if "update" in rule["verbs"]
            for resource in rule["resources"]
        }

    assert updates(default_docs) == set()
    assert updates(render.render({"rbac": {"rollForward": True}})) == {
        "deployments",
        "statefulsets",
        "daemonsets",
        "cronjobs",
        "inferenceservices",
    }
