"""Totality: parse_policy raises only ConfigError, evaluate never raises, whatever the input
(a policy that got past the apiserver while kitpin was down, a hostile Kitfile)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_fakes import cluster, evaluate, evidence, manifest

from controller import errors, policy

KEYS = st.sampled_from(
    [
        "mode",
        "namespaceSelector",
        "matchLabels",
        "matchExpressions",
        "key",
        "operator",
        "values",
        "repositories",
        "tags",
        "artifacts",
        "parents",
        "allowed",
        "denied",
        "requireDigest",
        "formats",
        "requiredLayers",
        "licenses",
        "allowUndeclared",
        "model",
        "path",
        "license",
        "package",
        "datasets",
        "remotePath",
        "parts",
        "code",
        "descriptor",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "enforce",
            "warn",
            "In",
            "Exists",
            "latest",
            "v*",
            "ghcr.io/**",
            "ghcr.io/a/b:v1",
            "a/b:v1",
            "model",
            "kitops-modelkit",
            "MIT",
            "MIT OR (GPL)",
            "",
            "**",
            "*",
        ]
    ),
    st.text(max_size=20),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS | st.text(max_size=5), children, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(spec=JSON)
def test_parse_policy_raises_only_config_error(spec: Any) -> None:
    obj = {
        "apiVersion": policy.API_VERSION,
        "kind": "ClusterModelKitPolicy",
        "metadata": {"name": "fuzz"},
        "spec": spec,
    }
    try:
        parsed = policy.parse_policy(obj)
    except errors.ConfigError:
        return
    assert isinstance(parsed.summary, str)
    assert len(parsed.rules) <= 9


EVERYTHING = cluster(
    "all",
    {
        "repositories": {"allowed": ["ghcr.io/**"]},
        "tags": {"denied": ["latest"], "requireDigest": True},
        "artifacts": {
            "requiredLayers": ["model"],
            "licenses": {"allowed": ["MIT"]},
        },
        "parents": {},
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(config=JSON, fmt=st.sampled_from(["kitops-modelkit", "modelpack"]))
def test_evaluate_never_raises_on_any_config(config: Any, fmt: Any) -> None:
    mapping = config if isinstance(config, dict) else {"model": config}
    ev = evidence("ghcr.io/acme/m:v1", manifest=manifest(fmt, ["code"]), config=mapping)
    verdict = evaluate([EVERYTHING], ev)
    assert verdict.outcome in ("allow", "warn", "audit", "deny")
