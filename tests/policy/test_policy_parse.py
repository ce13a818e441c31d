"""parse_policy: the model built from an object, and every refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from policy_fakes import cluster, namespaced

from controller import errors, policy

FULL: dict[str, Any] = {
    "mode": "warn",
    "namespaceSelector": {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [
            {"key": "team", "operator": "In", "values": ["ml"]},
            {"key": "kitpin.dev/exempt", "operator": "DoesNotExist"},
        ],
    },
    "repositories": {"allowed": ["ghcr.io/acme/**"], "denied": ["docker.io/**"], "mode": "enforce"},
    "tags": {"denied": ["latest"], "allowed": ["v*"], "requireDigest": True},
    "artifacts": {
        "formats": ["kitops-modelkit"],
        "requiredLayers": ["model", "docs"],
        "licenses": {"allowed": ["Apache-2.0", "MIT"], "allowUndeclared": True},
        "mode": "audit",
    },
    "parents": {"requireDigest": True},
}


def test_full_policy_model() -> None:
    p = cluster("prod-models", FULL, generation=4)
    assert p.kind == "ClusterModelKitPolicy"
    assert p.name == "prod-models" and p.namespace is None and p.generation == 4
    assert p.display == "ClusterModelKitPolicy/prod-models"
    assert p.mode == "warn"
    assert p.namespace_selector is not None
    assert dict(p.namespace_selector.match_labels) == {"env": "prod"}
    assert str(p.namespace_selector) == "env=prod,team in (ml),!kitpin.dev/exempt"
    assert p.repositories is not None and p.repositories.mode == "enforce"
    assert [g.pattern for g in p.repositories.allowed] == ["ghcr.io/acme/**"]
    assert p.tags is not None and p.tags.require_digest and p.tags.mode is None
    assert p.artifacts is not None
    assert p.artifacts.formats == frozenset({"kitops-modelkit"})
    assert p.artifacts.required_layers == ("model", "docs")
    assert p.artifacts.licenses == policy.LicenseRules(
        allowed=("Apache-2.0", "MIT"), allow_undeclared=True
    )
    assert p.parents == policy.ParentRules()
    assert p.rules == (
        "repositories.denied",
        "repositories.allowed",
        "tags.denied",
        "tags.allowed",
        "tags.requireDigest",
        "artifacts.formats",
        "artifacts.requiredLayers",
        "artifacts.licenses",
        "parents.requireDigest",
    )


def test_modes_per_block_fall_back_to_the_policy() -> None:
    p = cluster(spec=FULL)
    assert p.mode_of("repositories.denied") == "enforce"
    assert p.mode_of("tags.denied") == "warn"
    assert p.mode_of("artifacts.licenses") == "audit"
    assert p.mode_of("parents.requireDigest") == "warn"


def test_summary_is_one_line_with_mode_overrides() -> None:
    assert cluster(spec=FULL).summary == (
        "repositories: allow ghcr.io/acme/**, deny docker.io/** [enforce]; "
        "tags: deny latest, allow v*, digest required; "
        "artifacts: formats kitops-modelkit, layers model docs, licenses Apache-2.0 MIT "
        "[audit]; parents: pinned by digest"
    )
    assert cluster(spec={}).summary == "no rules"
    long = cluster(spec={"repositories": {"denied": [f"r{i}.example/x/**" for i in range(30)]}})
    assert len(long.summary) == policy.SUMMARY_LENGTH and long.summary.endswith("...")


def test_defaults() -> None:
    p = cluster(spec={})
    assert p.mode == "enforce"
    assert p.rules == ()
    assert p.namespace_selector is None
    p = cluster(spec={"namespaceSelector": {}, "parents": {}})
    assert p.namespace_selector == policy.LabelSelector()
    assert p.rules == ("parents.requireDigest",)


def test_absent_spec_is_empty() -> None:
    p = policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": "ClusterModelKitPolicy",
            "metadata": {"name": "a"},
        }
    )
    assert p.rules == ()


def test_namespaced_policy() -> None:
    p = namespaced("strict", "ml", {"tags": {"requireDigest": True}})
    assert p.namespace == "ml" and p.kind == "ModelKitPolicy"
    assert p.ref == policy.PolicyRef(kind="ModelKitPolicy", namespace="ml", name="strict")


def test_namespaced_policy_default_namespace() -> None:
    obj = {"apiVersion": policy.API_VERSION, "kind": "ModelKitPolicy", "metadata": {"name": "x"}}
    assert policy.parse_policy(obj, default_namespace="team-a").namespace == "team-a"
    with pytest.raises(errors.ConfigError, match=r"metadata\.namespace: is missing"):
        policy.parse_policy(obj)


def _problems(spec: Any, kind: str = "ClusterModelKitPolicy") -> str:
    with pytest.raises(errors.ConfigError) as info:
        policy.parse_policy(
            {
                "apiVersion": policy.API_VERSION,
                "kind": kind,
                "metadata": {"name": "p"},
                "spec": spec,
            }
        )
    return str(info.value)


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"mode": "Enforce"}, "spec.mode", "write one of enforce, warn, audit"),
        ({"mode": "block"}, "spec.mode", "'block'"),
        ({"tag": {"denied": ["latest"]}}, "spec.tag", "did you mean 'tags'?"),
        ({"tags": {"deny": ["latest"]}}, "spec.tags.deny", "did you mean 'denied'?"),
        ({"tags": {"denied": "latest"}}, "spec.tags.denied", "is a string, expected a list"),
        ({"tags": {"denied": ["latest", 3]}}, "spec.tags.denied[1]", "is a number"),
        ({"tags": {"denied": []}}, "spec.tags.denied", "is empty"),
        (
            {"tags": {"denied": ["a", "b", "a"]}},
            "spec.tags.denied[2]",
            "'a' repeats spec.tags.denied[0]",
        ),
        ({"tags": {"denied": ["rel/1"]}}, "spec.tags.denied[0]", "is not a tag pattern"),
        ({"tags": {"denied": ["-x"]}}, "spec.tags.denied[0]", "cannot start with '.' or '-'"),
        ({"tags": {"denied": ["x" * 129]}}, "spec.tags.denied[0]", "up to 128 characters"),
        ({"tags": {"requireDigest": "yes"}}, "spec.tags.requireDigest", "expected true or false"),
        ({"tags": {}}, "spec.tags", "states no rule"),
        (
            {"artifacts": {"mountableImageVolumes": "yes"}},
            "spec.artifacts.mountableImageVolumes",
            "expected true or false",
        ),
        ({"artifacts": {"mountableImageVolumes": False}}, "spec.artifacts", "states no rule"),
        ({"tags": {"requireDigest": False}}, "spec.tags", "states no rule"),
        ({"tags": []}, "spec.tags", "is an array, expected an object"),
        (
            {"tags": {"allowed": ["latest", "v1"], "denied": ["latest"]}},
            "spec.tags.allowed[0]",
            "also matched by spec.tags.denied[0] 'latest', and deny wins",
        ),
        (
            {"tags": {"allowed": ["dev-1"], "denied": ["dev-*"]}},
            "spec.tags.allowed[0]",
            "also matched by spec.tags.denied[0] 'dev-*'",
        ),
        (
            {"repositories": {"allowed": ["acme/**"]}},
            "spec.repositories.allowed[0]",
            "is not a registry host",
        ),
        (
            {"repositories": {"allowed": ["ghcr.io"]}},
            "spec.repositories.allowed[0]",
            "write e.g. 'ghcr.io/**'",
        ),
        (
            {"repositories": {"denied": ["GHCR.io/acme/**"]}},
            "spec.repositories.denied[0]",
            "write 'ghcr.io/acme/**'",
        ),
        (
            {"repositories": {"denied": ["ghcr.io/acme/mod**"]}},
            "spec.repositories.denied[0]",
            "'**' must be a whole component",
        ),
        (
            {"repositories": {"denied": ["ghcr.io//x"]}},
            "spec.repositories.denied[0]",
            "empty path component",
        ),
        (
            {"repositories": {"denied": ["ghcr.io/x y"]}},
            "spec.repositories.denied[0]",
            "may contain only",
        ),
        (
            {"repositories": {"denied": ["**/acme"]}},
            "spec.repositories.denied[0]",
            "invalid registry host part",
        ),
        (
            {"repositories": {"denied": ["index.docker.io/library/**"]}},
            "spec.repositories.denied[0]",
            "write 'docker.io/library/**'",
        ),
        (
            {"repositories": {"denied": ["ghcr.io/" + "a" * 260]}},
            "spec.repositories.denied[0]",
            "longer than 255",
        ),
        (
            {"repositories": {"allowed": ["ghcr.io/acme/model"], "denied": ["ghcr.io/acme/*"]}},
            "spec.repositories.allowed[0]",
            "deny wins, so allowing it has no effect",
        ),
        ({"repositories": {"mode": "warn"}}, "spec.repositories", "states no rule"),
        (
            {"artifacts": {"formats": ["docker"]}},
            "spec.artifacts.formats[0]",
            "write one of kitops-modelkit, modelpack",
        ),
        (
            {"artifacts": {"requiredLayers": ["weights"]}},
            "spec.artifacts.requiredLayers[0]",
            "write one of model, modelpart",
        ),
        (
            {"artifacts": {"formats": ["kitops-modelkit"], "requiredLayers": ["weight"]}},
            "spec.artifacts.requiredLayers[0]",
            "'weight' layers cannot occur in kitops-modelkit artifacts",
        ),
        (
            {"artifacts": {"formats": ["modelpack"], "requiredLayers": ["model", "mcpb"]}},
            "spec.artifacts.requiredLayers[1]",
            "'mcpb' layers cannot occur in modelpack",
        ),
        ({"artifacts": {}}, "spec.artifacts", "states no rule"),
        (
            {"artifacts": {"licenses": {"allowUndeclared": True}}},
            "spec.artifacts.licenses.allowed",
            "is missing",
        ),
        (
            {"artifacts": {"licenses": {"allowed": [" MIT"]}}},
            "spec.artifacts.licenses.allowed[0]",
            "is not a license identifier",
        ),
        (
            {"artifacts": {"licenses": {"allowed": ["MIT", "mit"]}}},
            "spec.artifacts.licenses.allowed[1]",
            "listed twice",
        ),
        (
            {"artifacts": {"licenses": ["MIT"]}},
            "spec.artifacts.licenses",
            "expected an object",
        ),
        (
            {"parents": {"requireDigest": False}},
            "spec.parents.requireDigest",
            "nothing to check",
        ),
        ({"parents": {"mode": "loud"}}, "spec.parents.mode", "write one of"),
        (
            {"namespaceSelector": {"matchLabels": {"env": "prod prod"}}},
            "spec.namespaceSelector.matchLabels['env']",
            "not a valid label value",
        ),
        (
            {"namespaceSelector": {"matchLabels": {"-bad": "x"}}},
            "spec.namespaceSelector.matchLabels['-bad']",
            "not a valid label key",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}},
            "spec.namespaceSelector.matchExpressions[0].values",
            "at least one value for In",
        ),
        (
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]
                }
            },
            "spec.namespaceSelector.matchExpressions[0].values",
            "must be empty for Exists",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Equals"}]}},
            "spec.namespaceSelector.matchExpressions[0].operator",
            "write one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {
                "namespaceSelector": {
                    "matchLabels": {"env": "prod"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
                }
            },
            "spec.namespaceSelector",
            "no namespace can match",
        ),
        (
            {
                "namespaceSelector": {
                    "matchLabels": {"env": "prod"},
                    "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}],
                }
            },
            "spec.namespaceSelector",
            "no namespace can match",
        ),
        ({"namespaceSelector": {"labels": {}}}, "spec.namespaceSelector.labels", "unknown field"),
        ("everything", "spec", "is a string, expected an object"),
    ],
)
def test_error_names_the_field(spec: Any, field: str, text: str) -> None:
    message = _problems(spec)
    assert message.startswith("ClusterModelKitPolicy/p is invalid: ")
    assert f"{field}: " in message
    assert text in message


def test_every_problem_is_reported_at_once() -> None:
    message = _problems({"mode": "x", "tags": {"denied": ["-a"]}, "parents": {"mode": "y"}})
    assert "spec.mode: " in message
    assert "spec.tags.denied[0]: " in message
    assert "spec.parents.mode: " in message


def test_namespace_selector_only_on_cluster_policies() -> None:
    message = _problems({"namespaceSelector": {}}, kind="ModelKitPolicy")
    assert "spec.namespaceSelector: only a ClusterModelKitPolicy has a namespaceSelector" in message


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ([], "a policy must be an object"),
        ({"kind": "Pod"}, "kind: 'Pod' is not a kitpin policy"),
        (
            {
                "apiVersion": "kitpin.dev/v1",
                "kind": "ClusterModelKitPolicy",
                "metadata": {"name": "a"},
            },
            "apiVersion: is 'kitpin.dev/v1'; write 'kitpin.dev/v1alpha1'",
        ),
        (
            {"apiVersion": "kitpin.dev/v1alpha1", "kind": "ClusterModelKitPolicy"},
            "metadata.name: is missing",
        ),
        (
            {
                "apiVersion": "kitpin.dev/v1alpha1",
                "kind": "ClusterModelKitPolicy",
                "metadata": {"name": "Prod_Models"},
            },
            "metadata.name: 'Prod_Models' is not a valid object name",
        ),
    ],
)
def test_object_level_errors(obj: Any, text: str) -> None:
    with pytest.raises(errors.ConfigError, match=None) as info:
        policy.parse_policy(obj)
    assert text in str(info.value)


# -- globs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        (
            "ghcr.io/acme/**",
            ["ghcr.io/acme/m", "ghcr.io/acme/a/b/c"],
            ["ghcr.io/acme", "ghcr.io/x/m"],
        ),
        ("ghcr.io/acme/*", ["ghcr.io/acme/m"], ["ghcr.io/acme/a/b"]),
        ("ghcr.io/*/model", ["ghcr.io/acme/model"], ["ghcr.io/a/b/model"]),
        (
            "ghcr.io/acme/**/prod",
            ["ghcr.io/acme/prod", "ghcr.io/acme/a/b/prod"],
            ["ghcr.io/acme/a"],
        ),
        ("ghcr.io/acme/model-?", ["ghcr.io/acme/model-1"], ["ghcr.io/acme/model-10"]),
        ("*.acme.example/**", ["eu.acme.example/m", "us.acme.example/a/b"], ["acme.example/m"]),
        ("localhost:5000/**", ["localhost:5000/m"], ["localhost:5001/m"]),
        ("[::1]:5000/models/*", ["[::1]:5000/models/x"], ["[::1]:5000/other/x"]),
        ("*/**", ["ghcr.io/x", "docker.io/library/nginx"], []),
        ("docker.io/library/nginx", ["docker.io/library/nginx"], ["docker.io/library/nginx2"]),
        ("registry.example/a.b/c_d", ["registry.example/a.b/c_d"], ["registry.example/aXb/c_d"]),
    ],
)
def test_repository_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    p = cluster(spec={"repositories": {"allowed": [pattern]}})
    assert p.repositories is not None
    glob = p.repositories.allowed[0]
    for name in matches:
        assert glob.matches(name), name
    for name in misses:
        assert not glob.matches(name), name


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("latest", ["latest"], ["Latest", "latest2"]),
        ("v*", ["v1", "v1.2.3", "v"], ["1.0", "dev-v1"]),
        ("release-?", ["release-1"], ["release-10"]),
        ("*-rc*", ["1.0-rc1"], ["1.0"]),
        ("v1.0", ["v1.0"], ["v1x0"]),
    ],
)
def test_tag_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    p = cluster(spec={"tags": {"denied": [pattern]}})
    assert p.tags is not None
    glob = p.tags.denied[0]
    assert glob.literal == ("*" not in pattern and "?" not in pattern)
    for tag in matches:
        assert glob.matches(tag), tag
    for tag in misses:
        assert not glob.matches(tag), tag


def test_allowed_pattern_narrower_than_denied_is_not_a_contradiction_when_wild() -> None:
    # deny wins over allow, but an allowed *pattern* may still admit names the deny misses
    p = cluster(spec={"repositories": {"allowed": ["ghcr.io/**"], "denied": ["ghcr.io/exp/**"]}})
    assert p.rules == ("repositories.denied", "repositories.allowed")


# -- parse_policies (kitpin check) ------------------------------------------------------------


def test_parse_policies_picks_policies_out_of_documents() -> None:
    docs = [
        None,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}},
        {"apiVersion": "other.dev/v1", "kind": "ModelKitPolicy", "metadata": {"name": "x"}},
        {"apiVersion": policy.API_VERSION, "kind": "ModelKitPolicy", "metadata": {"name": "b"}},
        {
            "apiVersion": policy.API_VERSION,
            "kind": "ClusterModelKitPolicy",
            "metadata": {"name": "z"},
        },
        {
            "apiVersion": policy.API_VERSION,
            "kind": "ClusterModelKitPolicy",
            "metadata": {"name": "a"},
        },
    ]
    parsed = policy.parse_policies(docs, default_namespace="ml")
    assert [p.display for p in parsed] == [
        "ClusterModelKitPolicy/a",
        "ClusterModelKitPolicy/z",
        "ModelKitPolicy/b",
    ]


def test_parse_policies_reports_every_bad_policy() -> None:
    docs = [
        {
            "apiVersion": policy.API_VERSION,
            "kind": "ClusterModelKitPolicy",
            "metadata": {"name": name},
            "spec": {"mode": "nope"},
        }
        for name in ("one", "two")
    ]
    with pytest.raises(errors.ConfigError) as info:
        policy.parse_policies(docs)
    assert "ClusterModelKitPolicy/one is invalid" in str(info.value)
    assert "ClusterModelKitPolicy/two is invalid" in str(info.value)
