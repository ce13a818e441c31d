"""policy.parse_policy / parse_policies on any object (a policy file for ``kitpin check`` is
whatever YAML gives: dates, bytes, integer keys, nan; a policy that got past a CRD schema of
an older kitpin): a Policy or a ConfigError naming the field, never another exception; and a
parsed policy evaluates any reference without raising."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from fuzz_helpers import YAML_KEYS, YAML_SCALARS, documents, fuzz
from hypothesis import strategies as st

from controller import artifacts, errors, policy, refs, sites
from controller.types import Layer, Manifest, Resolution

WORDS = st.sampled_from(
    [
        "enforce", "warn", "audit", "In", "NotIn", "Exists", "DoesNotExist", "latest", "v*", "v1.*",
        "ghcr.io/**", "ghcr.io/acme/*", "reg.example.com/ml/llama", "[a-", "**/x", "*", "**", "",
        "kitops-modelkit", "modelpack", "model", "modelpart", "dataset", "code", "docs", "weight",
        "MIT", "Apache-2.0", "MIT OR (GPL-3.0)", "team", "ml", "kubernetes.io/metadata.name",
        "a/b/c", "x" * 300,
    ]
)  # fmt: skip
"""Words of every field, in any field."""
JUNK = documents(YAML_KEYS, st.one_of(WORDS, WORDS, YAML_SCALARS), leaves=8)


def sometimes(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` mostly; one time in thirty a word of another field, one in thirty anything
    YAML can hold: each field is sometimes wrong, and about half of the policies are valid."""
    return st.integers(0, 29).flatmap(lambda i: WORDS if i == 28 else JUNK if i == 29 else value)


def words(*choices: str) -> st.SearchStrategy[str]:
    return sometimes(st.sampled_from(choices))


def lists(element: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return sometimes(st.lists(element, min_size=1, max_size=3))


REPOSITORIES = words("ghcr.io/**", "ghcr.io/acme/*", "reg.example.com/ml/llama", "**", "*/m")
TAGS = words("latest", "v*", "v1.*", "*-rc?", "[0-9]*")
MODE = words("enforce", "warn", "audit")
SELECTOR = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": sometimes(
            st.dictionaries(
                st.sampled_from(["team", "kubernetes.io/metadata.name", "env", "tier", "Bad Key"]),
                words("ml", "prod"),
            )
        ),
        "matchExpressions": lists(
            st.fixed_dictionaries(
                {"key": words("team", "env"), "operator": words("In", "NotIn", "Exists")},
                optional={"values": lists(words("ml", "prod"))},
            )
        ),
    },
)
REPOSITORY_RULES = st.fixed_dictionaries(
    {"allowed": lists(REPOSITORIES)}, optional={"denied": lists(REPOSITORIES), "mode": MODE}
) | st.fixed_dictionaries({"denied": lists(REPOSITORIES)}, optional={"mode": MODE})
TAG_RULES = st.fixed_dictionaries(
    {"denied": lists(TAGS)},
    optional={"allowed": lists(TAGS), "requireDigest": sometimes(st.booleans()), "mode": MODE},
) | st.fixed_dictionaries({"requireDigest": sometimes(st.booleans())}, optional={"mode": MODE})
LICENSES = st.fixed_dictionaries(
    {"allowed": lists(words("MIT", "Apache-2.0", "MIT OR GPL-3.0"))},
    optional={"allowUndeclared": sometimes(st.booleans())},
)
ARTIFACT_RULES = st.fixed_dictionaries(
    {"requiredLayers": lists(words("model", "dataset", "code", "docs", "weight"))},
    optional={
        "formats": lists(words("kitops-modelkit", "modelpack")),
        "licenses": sometimes(LICENSES),
        "mode": MODE,
    },
) | st.fixed_dictionaries({}, optional={"formats": lists(words("kitops-modelkit", "modelpack"))})
PARENT_RULES = st.fixed_dictionaries(
    {"requireDigest": sometimes(st.just(True)) | st.booleans()}, optional={"mode": MODE}
)
BLOCKS = {
    "mode": MODE,
    "namespaceSelector": sometimes(SELECTOR),
    "repositories": sometimes(REPOSITORY_RULES),
    "tags": sometimes(TAG_RULES),
    "artifacts": sometimes(ARTIFACT_RULES),
    "parents": sometimes(PARENT_RULES),
}
SPECS = st.one_of(
    st.fixed_dictionaries({}, optional=BLOCKS),
    *(
        st.fixed_dictionaries(
            {name: BLOCKS[name]}, optional={k: v for k, v in BLOCKS.items() if k != name}
        )
        for name in ("repositories", "tags", "artifacts", "parents")
    ),
)
"""Policy specs: each rule block, when present, states at least one rule (mostly)."""
OBJECTS = st.fixed_dictionaries(
    {
        "apiVersion": sometimes(st.just(policy.API_VERSION)),
        "kind": sometimes(st.sampled_from(list(policy.KINDS))),
        "metadata": sometimes(
            st.fixed_dictionaries(
                {"name": words("p", "prod-models", "a.b")},
                optional={
                    "namespace": words("ml", "", "team-b"),
                    "generation": sometimes(st.integers(-1, 2**70)),
                },
            )
        ),
        "spec": sometimes(SPECS),
    },
)

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def evidence(text: str, fmt: str) -> policy.Evidence:
    ref = refs.parse(text, grammar="kit")
    site = sites.Site(
        path="/spec/initContainers/0/env/0/value",
        kind="env",
        grammar="kit",
        value=text,
        expects_modelkit=True,
        where='initContainer "kitops-init" env MODELKIT_REF',
    )
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    config = artifacts.KITOPS_CONFIG if fmt == "kitops-modelkit" else artifacts.MODELPACK_CONFIG
    manifest = Manifest(
        digest=digest,
        media_type=artifacts.OCI_MANIFEST,
        size=100,
        format=fmt,  # type: ignore[arg-type]
        config_media_type=config,
        config_digest=digest,
        config_size=10,
        layers=(
            Layer(media_type="application/vnd.kitops.modelkit.model.v1.tar", digest=digest, size=1),
        ),
    )
    resolution = Resolution(
        reference=ref, digest=digest, manifest=manifest, resolved_at=NOW, source="registry"
    )
    return policy.Evidence(site=site, reference=ref, resolution=resolution, config=None)


EVIDENCE = st.builds(
    evidence,
    st.sampled_from(
        [
            "reg.example.com/ml/llama:latest",
            "ghcr.io/acme/m:v1.2",
            "ghcr.io/acme/m:v1@sha256:" + "a" * 64,
        ]
    ),
    st.sampled_from(["kitops-modelkit", "modelpack"]),
)


@fuzz(
    obj=st.one_of(OBJECTS, OBJECTS, OBJECTS, JUNK),
    labels=st.dictionaries(WORDS, WORDS, max_size=3),
    ev=EVIDENCE,
)
def test_parse_policy_gives_a_policy_or_a_config_error(
    obj: Any, labels: dict[str, str], ev: policy.Evidence
) -> None:
    try:
        parsed = policy.parse_policy(obj, default_namespace="default")
    except errors.ConfigError as e:
        assert e.reason == "InvalidConfig" and str(e)
        return
    assert parsed.kind == obj["kind"]
    assert parsed.name == obj["metadata"]["name"]
    assert parsed.display
    verdict = policy.evaluate([parsed], namespace="ml", namespace_labels=labels, evidence=[ev])
    assert verdict.outcome in ("allow", "warn", "audit", "deny")
    policy.needs_resolution([parsed])
    policy.needs_kitfile([parsed])
    assert ev.resolution is not None
    policy.needs_config([parsed], ev.resolution.manifest)


@fuzz(docs=st.lists(OBJECTS | JUNK, max_size=4))
def test_parse_policies_gives_policies_or_one_config_error(docs: list[Any]) -> None:
    try:
        parsed = policy.parse_policies(docs, default_namespace="default")
    except errors.ConfigError as e:
        assert str(e)
        return
    assert len(parsed) <= len(docs)
