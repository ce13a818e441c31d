"""evaluate: every rule in every mode, strictest wins, message texts, missing data."""

from __future__ import annotations

from typing import Any

import pytest
from policy_fakes import (
    POINTER,
    WHERE,
    cluster,
    evaluate,
    evidence,
    kitfile,
    manifest,
    namespaced,
    sha,
)

from controller import policy

DIGEST = sha("pinned")
MODES: list[policy.Mode] = ["enforce", "warn", "audit"]
OUTCOME = {"enforce": "deny", "warn": "warn", "audit": "audit"}


def _spec_with_mode(spec: dict[str, Any], mode: policy.Mode) -> dict[str, Any]:
    return {"mode": mode, **spec}


# Every rule: (spec, evidence that violates it, evidence that passes, rule, reason)
def _cases() -> list[tuple[str, dict[str, Any], policy.Evidence, policy.Evidence, str, str]]:
    mk = manifest("kitops-modelkit", ["model"])
    return [
        (
            "repositories.denied",
            {"repositories": {"denied": ["docker.io/**"]}},
            evidence("docker.io/acme/model:v1"),
            evidence("ghcr.io/acme/model:v1"),
            policy.Rule.REPOSITORIES_DENIED,
            policy.Reason.REPOSITORY_DENIED,
        ),
        (
            "repositories.allowed",
            {"repositories": {"allowed": ["ghcr.io/acme/**"]}},
            evidence("quay.io/acme/model:v1"),
            evidence("ghcr.io/acme/team/model:v1"),
            policy.Rule.REPOSITORIES_ALLOWED,
            policy.Reason.REPOSITORY_NOT_ALLOWED,
        ),
        (
            "tags.denied",
            {"tags": {"denied": ["latest"]}},
            evidence("ghcr.io/acme/model"),
            evidence("ghcr.io/acme/model:v1"),
            policy.Rule.TAGS_DENIED,
            policy.Reason.TAG_DENIED,
        ),
        (
            "tags.allowed",
            {"tags": {"allowed": ["v*"]}},
            evidence("ghcr.io/acme/model:dev"),
            evidence("ghcr.io/acme/model:v2"),
            policy.Rule.TAGS_ALLOWED,
            policy.Reason.TAG_NOT_ALLOWED,
        ),
        (
            "tags.requireDigest",
            {"tags": {"requireDigest": True}},
            evidence("ghcr.io/acme/model:v1"),
            evidence(f"ghcr.io/acme/model:v1@{DIGEST}"),
            policy.Rule.TAGS_REQUIRE_DIGEST,
            policy.Reason.DIGEST_REQUIRED,
        ),
        (
            "artifacts.formats",
            {"artifacts": {"formats": ["kitops-modelkit"]}},
            evidence("ghcr.io/acme/model:v1", manifest=manifest("modelpack", ["weight"])),
            evidence("ghcr.io/acme/model:v1", manifest=mk),
            policy.Rule.ARTIFACTS_FORMATS,
            policy.Reason.FORMAT_NOT_ALLOWED,
        ),
        (
            "artifacts.requiredLayers",
            {"artifacts": {"requiredLayers": ["model"]}},
            evidence(
                "ghcr.io/acme/model:v1",
                manifest=manifest("kitops-modelkit", ["code", "docs"]),
                config=kitfile(model_path="x"),
            ),
            evidence("ghcr.io/acme/model:v1", manifest=mk),
            policy.Rule.ARTIFACTS_REQUIRED_LAYERS,
            policy.Reason.LAYERS_MISSING,
        ),
        (
            "artifacts.licenses",
            {"artifacts": {"licenses": {"allowed": ["Apache-2.0"]}}},
            evidence(
                "ghcr.io/acme/model:v1", manifest=mk, config=kitfile(package_license="GPL-3.0")
            ),
            evidence("ghcr.io/acme/model:v1", manifest=mk, config=kitfile()),
            policy.Rule.ARTIFACTS_LICENSES,
            policy.Reason.LICENSE_NOT_ALLOWED,
        ),
        (
            "parents.requireDigest",
            {"parents": {}},
            evidence(
                "ghcr.io/acme/child:v1",
                manifest=mk,
                config=kitfile(model_path="ghcr.io/acme/base:v1"),
            ),
            evidence(
                "ghcr.io/acme/child:v1",
                manifest=mk,
                config=kitfile(model_path=f"ghcr.io/acme/base:v1@{DIGEST}"),
            ),
            policy.Rule.PARENTS_REQUIRE_DIGEST,
            policy.Reason.PARENT_NOT_PINNED,
        ),
    ]


CASES = _cases()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("case", "spec", "bad", "good", "rule", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_every_rule_in_every_mode(
    case: str,
    spec: dict[str, Any],
    bad: policy.Evidence,
    good: policy.Evidence,
    rule: str,
    reason: str,
    mode: policy.Mode,
) -> None:
    p = cluster("prod-models", _spec_with_mode(spec, mode))
    verdict = evaluate([p], bad)
    assert [(v.rule, v.reason, v.mode) for v in verdict.violations] == [(rule, reason, mode)]
    violation = verdict.violations[0]
    assert violation.policy == p.ref
    assert violation.path == POINTER and violation.where == WHERE
    assert violation.reference == bad.site.value
    assert violation.message.startswith(f"ClusterModelKitPolicy/prod-models rule {rule}: {WHERE} ")
    assert verdict.outcome == OUTCOME[mode]
    assert verdict.allowed == (mode != "enforce")
    assert verdict.unchecked == ()

    clean = evaluate([p], good)
    assert clean.violations == () and clean.unchecked == ()
    assert clean.outcome == "allow" and clean.reason == policy.Reason.ALLOWED


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("case", "spec", "bad", "good", "rule", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_block_mode_overrides_policy_mode(
    case: str,
    spec: dict[str, Any],
    bad: policy.Evidence,
    good: policy.Evidence,
    rule: str,
    reason: str,
    mode: policy.Mode,
) -> None:
    ((block, body),) = spec.items()
    other: policy.Mode = "audit" if mode != "audit" else "enforce"
    p = cluster(spec={"mode": other, block: {**body, "mode": mode}})
    verdict = evaluate([p], bad)
    assert [v.mode for v in verdict.violations] == [mode]


# -- outcomes ---------------------------------------------------------------------------------


def test_strictest_wins_across_policies_and_all_violations_are_kept() -> None:
    audit = cluster("a-audit", {"mode": "audit", "tags": {"denied": ["latest"]}})
    warn = cluster("b-warn", {"mode": "warn", "tags": {"denied": ["latest"]}})
    enforce = namespaced("strict", "ml", {"tags": {"requireDigest": True}})
    ev = evidence("ghcr.io/acme/model:latest")

    verdict = evaluate([enforce, warn, audit], ev)
    assert [(str(v.policy), v.mode) for v in verdict.violations] == [
        ("ClusterModelKitPolicy/a-audit", "audit"),
        ("ClusterModelKitPolicy/b-warn", "warn"),
        ("ModelKitPolicy/strict", "enforce"),
    ]
    assert verdict.outcome == "deny" and verdict.reason == policy.Reason.DENIED
    assert verdict.policies == (audit.ref, warn.ref, enforce.ref)
    assert [v.policy for v in verdict.denials] == [enforce.ref]
    assert [v.policy for v in verdict.warnings] == [warn.ref]
    assert [v.policy for v in verdict.audits] == [audit.ref]

    assert evaluate([warn, audit], ev).outcome == "warn"
    assert evaluate([warn, audit], ev).reason == policy.Reason.WARNED
    assert evaluate([audit], ev).outcome == "audit"
    assert evaluate([audit], ev).reason == policy.Reason.AUDITED
    assert evaluate([audit], ev).allowed


def test_denial_and_warning_messages() -> None:
    enforce = cluster("prod-models", {"tags": {"denied": ["latest"]}})
    warn = cluster("rollout", {"mode": "warn", "repositories": {"denied": ["ghcr.io/acme/**"]}})
    verdict = evaluate([enforce, warn], evidence("ghcr.io/acme/model:latest"))
    assert verdict.denial_message() == (
        "denied by ModelKit policy (PolicyDenied): ClusterModelKitPolicy/prod-models rule "
        f"tags.denied: {WHERE} 'ghcr.io/acme/model:latest' uses the tag 'latest', which is not "
        "allowed in namespace ml (denied pattern 'latest'); pin a release tag or a digest "
        "('ghcr.io/acme/model@sha256:<digest>')"
    )
    (warning,) = verdict.warning_messages()
    assert warning.startswith("ClusterModelKitPolicy/rollout rule repositories.denied: ")
    assert warning.endswith("(mode warn: admitted for now)")
    assert evaluate([warn], evidence("ghcr.io/acme/m:v1")).denial_message() == ""


def test_by_policy_groups_violations() -> None:
    p = cluster("p", {"tags": {"denied": ["latest"], "requireDigest": True}})
    q = cluster("q", {"tags": {"denied": ["latest"]}})
    verdict = evaluate(
        [p, q], evidence("ghcr.io/a/m:latest", path="/a"), evidence("ghcr.io/a/n", path="/b")
    )
    grouped = verdict.by_policy()
    assert [v.rule for v in grouped[p.ref]] == [
        "tags.denied",
        "tags.requireDigest",
        "tags.denied",
        "tags.requireDigest",
    ]
    assert [v.path for v in grouped[q.ref]] == ["/a", "/b"]


def test_violations_follow_evidence_order_then_policy_order() -> None:
    p = cluster("b", {"tags": {"denied": ["latest"]}})
    q = cluster("a", {"tags": {"denied": ["latest"]}})
    verdict = evaluate([p, q], evidence("r.io/x", path="/1"), evidence("r.io/y", path="/2"))
    assert [(v.path, v.policy.name) for v in verdict.violations] == [
        ("/1", "a"),
        ("/1", "b"),
        ("/2", "a"),
        ("/2", "b"),
    ]


def test_policies_that_do_not_match_are_ignored() -> None:
    prod = cluster("prod", {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "parents": {}})
    other_ns = namespaced("strict", "other", {"tags": {"requireDigest": True}})
    verdict = evaluate([prod, other_ns], evidence("r.io/x:v1"), labels={"env": "dev"})
    assert verdict.policies == () and verdict.outcome == "allow" and verdict.unchecked == ()


def test_no_policies_no_evidence() -> None:
    assert evaluate([]).outcome == "allow"
    assert evaluate([cluster(spec={"tags": {"denied": ["latest"]}})]).violations == ()


# -- repository rules ---------------------------------------------------------------------------


def test_deny_wins_over_allow() -> None:
    p = cluster(
        spec={"repositories": {"allowed": ["ghcr.io/**"], "denied": ["ghcr.io/acme/exp/**"]}}
    )
    verdict = evaluate([p], evidence("ghcr.io/acme/exp/model:v1"))
    assert [v.rule for v in verdict.violations] == ["repositories.denied"]
    assert verdict.violations[0].message.endswith(
        "comes from ghcr.io/acme/exp/model, which matches the denied pattern "
        "'ghcr.io/acme/exp/**' in namespace ml; use a ModelKit from an approved repository "
        "('ghcr.io/**')"
    )


def test_repository_messages() -> None:
    p = cluster(spec={"repositories": {"denied": ["docker.io/**"]}})
    (v,) = evaluate([p], evidence("docker.io/acme/m:v1")).violations
    assert v.message.endswith("; use a ModelKit from another repository")
    p = cluster(spec={"repositories": {"allowed": ["ghcr.io/acme/**", "r.example/m/*"]}})
    (v,) = evaluate([p], evidence("quay.io/acme/m:v1")).violations
    assert v.message == (
        f"ClusterModelKitPolicy/prod-models rule repositories.allowed: {WHERE} "
        "'quay.io/acme/m:v1' comes from quay.io/acme/m, which matches none of the repositories "
        "allowed in namespace ml ('ghcr.io/acme/**', 'r.example/m/*'); use a ModelKit from an "
        "allowed repository, or ask the platform team to allow this one in "
        "ClusterModelKitPolicy/prod-models"
    )


def test_repositories_match_the_normalised_name() -> None:
    p = cluster(spec={"repositories": {"allowed": ["docker.io/library/**", "ghcr.io/**"]}})
    ok = evidence("nginx:1.27", grammar="image", expects_modelkit=False)
    assert evaluate([p], ok).violations == ()
    assert evaluate([p], evidence("GHCR.IO/acme/m:v1")).violations == ()
    assert evaluate([p], evidence("index.docker.io/library/x:v1", grammar="image")).violations == ()


# -- tag rules ---------------------------------------------------------------------------------


def test_no_tag_means_latest() -> None:
    p = cluster(spec={"tags": {"denied": ["latest"]}})
    (v,) = evaluate([p], evidence("ghcr.io/acme/m")).violations
    assert "uses the tag 'latest' (no tag means 'latest')" in v.message


def test_tag_rules_read_the_tag_next_to_a_digest() -> None:
    p = cluster(spec={"tags": {"denied": ["latest"], "allowed": ["v*"]}})
    (v,) = evaluate([p], evidence(f"ghcr.io/acme/m:latest@{DIGEST}")).violations
    assert v.rule == "tags.denied"
    (v,) = evaluate([p], evidence(f"ghcr.io/acme/m:dev@{DIGEST}")).violations
    assert v.rule == "tags.allowed"
    assert v.message.endswith(
        "uses the tag 'dev', which matches none of the tags allowed in namespace ml ('v*'); "
        "use an allowed tag, or reference the ModelKit by digest only "
        "('ghcr.io/acme/m@sha256:<digest>')"
    )


def test_digest_only_reference_has_no_tag() -> None:
    p = cluster(spec={"tags": {"denied": ["latest"], "allowed": ["v*"], "requireDigest": True}})
    assert evaluate([p], evidence(f"ghcr.io/acme/m@{DIGEST}")).violations == ()


def test_denied_tag_is_not_also_reported_as_not_allowed() -> None:
    p = cluster(spec={"tags": {"denied": ["latest"], "allowed": ["v*"]}})
    assert [v.rule for v in evaluate([p], evidence("ghcr.io/a/m:latest")).violations] == [
        "tags.denied"
    ]


def test_require_digest_reads_what_the_user_wrote() -> None:
    p = cluster(spec={"tags": {"requireDigest": True}})
    pinned_by_kitpin = evidence(
        f"ghcr.io/acme/m:v1@{DIGEST}", written="ghcr.io/acme/m:v1", prefix=""
    )
    (v,) = evaluate([p], pinned_by_kitpin).violations
    assert v.rule == "tags.requireDigest"
    assert v.message.endswith(
        "has no digest, and namespace ml accepts only references written with a digest; "
        "write 'ghcr.io/acme/m:v1@sha256:<digest>' in the manifest "
        "(`kitpin resolve 'ghcr.io/acme/m:v1'` prints the digest)"
    )


def test_kit_uri_prefix_is_kept_in_advice() -> None:
    p = cluster(spec={"tags": {"requireDigest": True}})
    (v,) = evaluate([p], evidence("kit://ghcr.io/acme/m:v1", prefix="kit://")).violations
    assert "write 'kit://ghcr.io/acme/m:v1@sha256:<digest>'" in v.message
    assert "`kitpin resolve 'ghcr.io/acme/m:v1'`" in v.message


# -- artifact rules ----------------------------------------------------------------------------


def test_unresolved_reference_leaves_artifact_rules_unchecked() -> None:
    p = cluster(
        spec={
            "tags": {"denied": ["latest"]},
            "artifacts": {"formats": ["modelpack"], "licenses": {"allowed": ["MIT"]}},
            "parents": {"mode": "warn"},
        }
    )
    verdict = evaluate([p], evidence("ghcr.io/acme/m:v1"))
    assert verdict.violations == ()
    assert [(u.rule, u.mode) for u in verdict.unchecked] == [
        ("artifacts.formats", "enforce"),
        ("artifacts.licenses", "enforce"),
        ("parents.requireDigest", "warn"),
    ]
    assert verdict.unchecked[0].message == (
        f"ClusterModelKitPolicy/prod-models rule artifacts.formats: {WHERE} 'ghcr.io/acme/m:v1': "
        "the reference was not resolved, so the artifact is unknown"
    )
    assert verdict.outcome == "allow"


def test_artifact_rules_skip_what_is_not_a_model() -> None:
    p = cluster(
        spec={
            "artifacts": {"formats": ["kitops-modelkit"], "requiredLayers": ["model"]},
            "parents": {},
        }
    )
    image = evidence(
        "docker.io/library/busybox:1.36",
        grammar="image",
        expects_modelkit=False,
        manifest=manifest("other", ["x"]),
    )
    plain_index = evidence("r.io/img:v1", grammar="image", manifest=manifest("oci-index"))
    verdict = evaluate([p], image, plain_index)
    assert verdict.violations == () and verdict.unchecked == ()


def test_image_volume_holding_a_model_is_checked() -> None:
    p = cluster(spec={"artifacts": {"formats": ["kitops-modelkit"]}})
    ev = evidence(
        "ghcr.io/acme/m:v1",
        grammar="image",
        expects_modelkit=False,
        manifest=manifest("modelpack", ["weight"]),
    )
    (v,) = evaluate([p], ev).violations
    assert v.message.endswith(
        "is a CNCF ModelPack, but namespace ml accepts only a KitOps ModelKit; pack it with "
        "`kit pack` (without --use-model-pack)"
    )


def test_format_message_for_modelpack_only() -> None:
    p = cluster(spec={"artifacts": {"formats": ["modelpack"]}})
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest())).violations
    assert v.message.endswith(
        "is a KitOps ModelKit, but namespace ml accepts only a CNCF ModelPack; pack it with "
        "`kit pack --use-model-pack`"
    )


@pytest.mark.parametrize(
    ("fmt", "layers", "required", "missing"),
    [
        ("kitops-modelkit", ["model", "docs"], ["model", "docs"], None),
        ("kitops-modelkit", ["modelpart"], ["model"], None),  # modelpart implies model
        ("modelpack", ["weight"], ["model"], None),  # weight implies model
        ("modelpack", ["weight-config", "weight"], ["modelpart"], None),
        ("kitops-modelkit", ["model"], ["model", "dataset"], "has no dataset layer"),
        ("kitops-modelkit", ["model"], ["dataset", "docs"], "has no dataset and no docs layer"),
        ("modelpack", ["docs"], ["weight"], "has no weight layer (its layers: docs)"),
        ("kitops-modelkit", [], ["model"], "has no model layer (its layers: none kitpin"),
    ],
)
def test_required_layers(fmt: Any, layers: list[str], required: list[str], missing: Any) -> None:
    p = cluster(spec={"artifacts": {"requiredLayers": required}})
    ev = evidence("r.io/m:v1", manifest=manifest(fmt, layers), config=kitfile(model_path="m"))
    violations = evaluate([p], ev).violations
    if missing is None:
        assert violations == ()
    else:
        (v,) = violations
        assert missing in v.message
        assert v.message.endswith(
            f"but namespace ml requires {', '.join(required)}; use a ModelKit that contains them "
            "(a Kitfile model section packs a model layer)"
        )


def test_model_from_a_parent_modelkit_counts_as_a_model_layer() -> None:
    p = cluster(spec={"artifacts": {"requiredLayers": ["model"]}})
    child = manifest("kitops-modelkit", ["code"])
    with_parent = evidence(
        "r.io/child:v1", manifest=child, config=kitfile(model_path=f"r.io/base:v1@{DIGEST}")
    )
    assert evaluate([p], with_parent).violations == ()
    without_kitfile = evidence("r.io/child:v1", manifest=child)
    verdict = evaluate([p], without_kitfile)
    assert verdict.violations == ()
    assert [u.rule for u in verdict.unchecked] == ["artifacts.requiredLayers"]
    assert "whether a parent ModelKit supplies it" in verdict.unchecked[0].why


@pytest.mark.parametrize(
    ("declared", "allowed", "approved"),
    [
        ("Apache-2.0", ["Apache-2.0"], True),
        ("apache-2.0", ["Apache-2.0"], True),
        ("MIT OR GPL-3.0", ["MIT"], True),
        ("GPL-3.0 OR LGPL-2.1", ["MIT"], False),
        ("MIT AND Apache-2.0", ["MIT", "Apache-2.0"], True),
        ("MIT AND GPL-3.0", ["MIT"], False),
        ("(MIT OR GPL-3.0)", ["MIT"], False),
        ("(MIT OR GPL-3.0)", ["(MIT OR GPL-3.0)"], True),
        ("Apache-2.0 WITH LLVM-exception", ["Apache-2.0"], False),
        ("Apache-2.0 WITH LLVM-exception", ["Apache-2.0 WITH LLVM-exception"], True),
        ("Llama-3.1", ["llama-3.1"], True),
    ],
)
def test_license_expressions(declared: str, allowed: list[str], approved: bool) -> None:
    p = cluster(spec={"artifacts": {"licenses": {"allowed": allowed}}})
    ev = evidence("r.io/m:v1", manifest=manifest(), config=kitfile(package_license=declared))
    assert (evaluate([p], ev).violations == ()) == approved


def test_every_declared_license_must_be_approved_one_violation_per_modelkit() -> None:
    p = cluster(spec={"artifacts": {"licenses": {"allowed": ["Apache-2.0", "MIT"]}}})
    doc = kitfile(package_license="Apache-2.0", model_license="Llama-3.1")
    doc["model"]["parts"] = [{"path": "p", "license": "MIT"}]
    doc["datasets"] = [{"path": "d", "license": "CC-BY-NC-4.0"}]
    doc["code"] = [{"path": "c", "license": "MIT"}]
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest(), config=doc)).violations
    assert v.reason == "LicenseNotAllowed"
    assert v.message.endswith(
        "declares the licenses 'Llama-3.1' (Kitfile model.license) and 'CC-BY-NC-4.0' "
        "(Kitfile datasets[0].license), which are not approved in namespace ml (approved: "
        "Apache-2.0, MIT); use a ModelKit under an approved license, or ask the platform team "
        "to approve it in ClusterModelKitPolicy/prod-models"
    )


def test_one_license_in_two_places_is_one_violation_naming_both() -> None:
    """A GPL ModelKit whose Kitfile says GPL in package.license and model.license broke one
    rule once: one violation (one count in status and metrics), naming both places."""
    p = cluster(spec={"artifacts": {"licenses": {"allowed": ["Apache-2.0"]}}})
    doc = kitfile(package_license="GPL-3.0", model_license="gpl-3.0 ")
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest(), config=doc)).violations
    assert (v.rule, v.reason) == ("artifacts.licenses", "LicenseNotAllowed")
    assert (
        "declares the license 'GPL-3.0' (Kitfile package.license and model.license), which is "
        "not approved in namespace ml (approved: Apache-2.0)"
    ) in v.message


def test_undeclared_license() -> None:
    strict = cluster("s", {"artifacts": {"licenses": {"allowed": ["MIT"]}}})
    lenient = cluster(
        "l", {"artifacts": {"licenses": {"allowed": ["MIT"], "allowUndeclared": True}}}
    )
    ev = evidence("r.io/m:v1", manifest=manifest(), config=kitfile(package_license=None))
    (v,) = evaluate([strict, lenient], ev).violations
    assert v.policy == strict.ref and v.reason == policy.Reason.LICENSE_UNDECLARED
    assert v.message.endswith(
        "declares no license in its Kitfile, and namespace ml accepts only approved licenses "
        "(MIT); use a ModelKit whose Kitfile declares an approved license (package.license or "
        "model.license)"
    )


def test_licenses_of_a_modelpack() -> None:
    p = cluster(spec={"artifacts": {"licenses": {"allowed": ["MIT"]}}})
    by_kit = manifest("modelpack", ["weight"], kitfile=kitfile(package_license="GPL-3.0"))
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=by_kit)).violations
    assert "(Kitfile package.license)" in v.message

    plain = manifest("modelpack", ["weight"])
    config = {"descriptor": {"licenses": ["MIT", "BSD-3-Clause"]}}
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=plain, config=config)).violations
    assert "'BSD-3-Clause' (ModelPack config descriptor.licenses[1])" in v.message

    verdict = evaluate([p], evidence("r.io/m:v1", manifest=plain))
    assert verdict.violations == ()
    assert verdict.unchecked[0].why == (
        "the ModelPack config (config blob) was not fetched, so the licenses are unknown"
    )


def test_licenses_without_the_kitfile_are_unchecked() -> None:
    p = cluster(spec={"artifacts": {"licenses": {"allowed": ["MIT"]}}, "parents": {}})
    verdict = evaluate([p], evidence("r.io/m:v1", manifest=manifest()))
    assert verdict.violations == ()
    assert [u.rule for u in verdict.unchecked] == ["artifacts.licenses", "parents.requireDigest"]


def test_kit_index_cannot_be_checked_for_layers_licenses_and_parents() -> None:
    p = cluster(
        spec={
            "artifacts": {
                "formats": ["kitops-modelkit"],
                "requiredLayers": ["model"],
                "licenses": {"allowed": ["MIT"]},
            },
            "parents": {},
        }
    )
    from controller import artifacts

    index = manifest("oci-index", artifact_type=artifacts.KITOPS_INDEX_ARTIFACT_TYPE)
    verdict = evaluate([p], evidence("r.io/m:v1", manifest=index))
    assert [(v.rule, v.reason) for v in verdict.violations] == [
        ("artifacts.requiredLayers", "Uncheckable"),
        ("artifacts.licenses", "Uncheckable"),
        ("parents.requireDigest", "Uncheckable"),
    ]
    assert "reference the ModelKit's own manifest" in verdict.violations[0].message
    modelpack_only = cluster("mp", {"artifacts": {"formats": ["modelpack"]}})
    (v,) = evaluate([modelpack_only], evidence("r.io/m:v1", manifest=index)).violations
    assert v.rule == "artifacts.formats"


# -- parents -----------------------------------------------------------------------------------


def test_parent_by_tag_message() -> None:
    p = cluster(spec={"parents": {"mode": "warn"}})
    ev = evidence(
        f"r.io/child:v1@{DIGEST}",
        manifest=manifest(),
        config=kitfile(model_path="registry.acme.example/base/llama:8b"),
    )
    (v,) = evaluate([p], ev).violations
    assert v.mode == "warn"
    assert v.message == (
        f"ClusterModelKitPolicy/prod-models rule parents.requireDigest: {WHERE} "
        f"'r.io/child:v1@{DIGEST}' takes content from the parent ModelKit "
        "'registry.acme.example/base/llama:8b' (Kitfile model.path) by tag: `kit unpack` pulls "
        "that tag even though this ModelKit is pinned, so its content can change underneath "
        "(KitOps #899); repack the ModelKit with model.path: "
        "'registry.acme.example/base/llama:8b@sha256:<digest>' (`kitpin resolve "
        "'registry.acme.example/base/llama:8b'` prints the digest)"
    )


def test_parent_in_local_storage() -> None:
    p = cluster(spec={"parents": {}})
    ev = evidence("r.io/child:v1", manifest=manifest(), config=kitfile(model_path="acme/base:v1"))
    (v,) = evaluate([p], ev).violations
    assert v.reason == policy.Reason.PARENT_LOCAL
    assert "without a registry host, so kit would read it from its local storage" in v.message


def test_dataset_remote_path_parent() -> None:
    p = cluster(spec={"parents": {}})
    doc = kitfile(
        datasets=[
            {"path": "data/train", "remotePath": "docker.io/kit-org/data:latest"},
            {"path": "data/s3", "remotePath": "s3://bucket/key"},
        ]
    )
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest(), config=doc)).violations
    assert "(Kitfile datasets[0].remotePath)" in v.message


def test_several_parents_by_tag_are_one_violation_naming_each() -> None:
    p = cluster(spec={"parents": {}})
    doc = kitfile(
        model_path="r.io/base/llama:8b",
        datasets=[
            {"path": "d", "remotePath": "r.io/data/train:v2"},
            {"path": "e", "remotePath": "data/local:v1"},
            {"path": "f", "remotePath": f"r.io/data/pinned:v1@{DIGEST}"},
        ],
    )
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest(), config=doc)).violations
    assert (v.rule, v.reason) == ("parents.requireDigest", policy.Reason.PARENT_LOCAL)
    assert (
        "takes content from 3 parent ModelKits that are not pinned by digest: "
        "'r.io/base/llama:8b' (Kitfile model.path) by tag, 'r.io/data/train:v2' (Kitfile "
        "datasets[0].remotePath) by tag and 'data/local:v1' (Kitfile datasets[1].remotePath) "
        "without a registry host (kit's local storage, which a Pod does not have)"
    ) in v.message
    assert "r.io/data/pinned" not in v.message  # pinned by digest: fine
    assert (
        "repack the ModelKit with model.path: 'r.io/base/llama:8b@sha256:<digest>', "
        "datasets[0].remotePath: 'r.io/data/train:v2@sha256:<digest>' and "
        "datasets[1].remotePath: 'registry/repository:tag@sha256:...'"
    ) in v.message

    tags_only = kitfile(
        model_path="r.io/base/llama:8b", datasets=[{"path": "d", "remotePath": "r.io/d:v2"}]
    )
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=manifest(), config=tags_only)).violations
    assert v.reason == policy.Reason.PARENT_NOT_PINNED


def test_plain_modelpack_has_no_parents() -> None:
    p = cluster(spec={"parents": {}})
    verdict = evaluate([p], evidence("r.io/m:v1", manifest=manifest("modelpack", ["weight"])))
    assert verdict.violations == () and verdict.unchecked == ()


def test_modelpack_made_by_kit_reads_parents_from_the_annotation() -> None:
    p = cluster(spec={"parents": {}})
    mp = manifest("modelpack", ["weight"], kitfile=kitfile(model_path="r.io/base:v1"))
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=mp)).violations
    assert v.reason == policy.Reason.PARENT_NOT_PINNED


def test_evaluate_is_total_on_odd_kitfiles() -> None:
    p = cluster(
        spec={
            "artifacts": {"requiredLayers": ["model"], "licenses": {"allowed": ["MIT"]}},
            "parents": {},
        }
    )
    odd: list[Any] = [
        {},
        {"model": "x", "datasets": "y", "package": []},
        {"model": {"path": 3, "parts": "x", "license": 5}, "datasets": [None, 1, {"path": []}]},
        {"code": [{"license": "   "}], "package": {"license": ["MIT"]}},
    ]
    for doc in odd:
        ev = evidence("r.io/m:v1", manifest=manifest(), config=doc)
        verdict = evaluate([p], ev)
        assert {v.reason for v in verdict.violations} <= {"LicenseUndeclared"}


# -- artifacts.mountableImageVolumes --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_image_volume_naming_a_kitops_modelkit_breaks_mountable_image_volumes(
    mode: policy.Mode,
) -> None:
    p = cluster(spec={"mode": mode, "artifacts": {"mountableImageVolumes": True}})
    volume = evidence(
        "r.io/m:v1",
        manifest=manifest("kitops-modelkit", ["model"]),
        grammar="image",
        expects_modelkit=False,
    )
    verdict = evaluate([p], volume)
    (v,) = verdict.violations
    assert (v.rule, v.reason, v.mode) == (
        "artifacts.mountableImageVolumes",
        "ImageVolumeNotMountable",
        mode,
    )
    assert "is a KitOps ModelKit, which the kubelet cannot mount as an image volume" in v.message
    assert v.message.endswith("instead of an image volume")
    assert verdict.outcome == OUTCOME[mode]


def test_mountable_image_volumes_passes_a_modelpack_and_ignores_other_sites() -> None:
    p = cluster(spec={"artifacts": {"mountableImageVolumes": True}})
    modelpack_volume = evidence(
        "r.io/m:v1", manifest=manifest("modelpack", ["weight"]), grammar="image"
    )
    assert evaluate([p], modelpack_volume).violations == ()
    env_site = evidence("r.io/m:v1", manifest=manifest("kitops-modelkit", ["model"]))
    assert evaluate([p], env_site).violations == ()


def test_a_kit_index_in_an_image_volume_breaks_mountable_image_volumes() -> None:
    from controller import artifacts

    p = cluster(spec={"artifacts": {"mountableImageVolumes": True}})
    index = manifest("oci-index", artifact_type=artifacts.KITOPS_INDEX_ARTIFACT_TYPE)
    (v,) = evaluate([p], evidence("r.io/m:v1", manifest=index, grammar="image")).violations
    assert (v.rule, v.reason) == ("artifacts.mountableImageVolumes", "ImageVolumeNotMountable")
    assert "a KitOps ModelKit index" in v.message
