"""Which policies apply where: namespace selectors and namespaced policies."""

from __future__ import annotations

from typing import Any

import pytest
from policy_fakes import cluster, namespaced

from controller import policy

LABELS = {"kubernetes.io/metadata.name": "ml", "env": "prod", "team": "search"}


@pytest.mark.parametrize(
    ("selector", "applies"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"env": "prod"}}, True),
        ({"matchLabels": {"env": "prod", "team": "search"}}, True),
        ({"matchLabels": {"env": "dev"}}, False),
        ({"matchLabels": {"tier": "gold"}}, False),
        ({"matchLabels": {"kubernetes.io/metadata.name": "ml"}}, True),
        (
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "search"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["search"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["other"]}],
            },
            False,
        ),
    ],
)
def test_namespace_selector(selector: Any, applies: bool) -> None:
    spec: dict[str, Any] = {"tags": {"denied": ["latest"]}}
    if selector is not None:
        spec["namespaceSelector"] = selector
    p = cluster(spec=spec)
    assert p.applies_to("ml", LABELS) is applies
    assert (policy.matching([p], namespace="ml", namespace_labels=LABELS) == (p,)) is applies


def test_namespaced_policy_applies_in_its_namespace_only() -> None:
    p = namespaced("strict", "ml")
    assert p.applies_to("ml", {})
    assert not p.applies_to("ml-2", LABELS)


def test_matching_orders_cluster_policies_first_then_by_name() -> None:
    b = cluster("b")
    a = cluster("a")
    own = namespaced("a-own", "ml")
    foreign = namespaced("x", "other")
    unmatched = cluster("c", {"namespaceSelector": {"matchLabels": {"env": "dev"}}})
    got = policy.matching([own, b, foreign, unmatched, a], namespace="ml", namespace_labels=LABELS)
    assert got == (a, b, own)


def test_selector_text() -> None:
    p = cluster(
        spec={
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "b", "operator": "NotIn", "values": ["y", "x"]},
                    {"key": "c", "operator": "Exists"},
                ]
            }
        }
    )
    assert p.namespace_selector is not None
    assert str(p.namespace_selector) == "b notin (x,y),c"
    assert str(policy.LabelSelector()) == "<all namespaces>"
