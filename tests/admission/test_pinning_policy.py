"""Policy inside the engine: what mutate refuses up front, what validate decides."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controller import policy
from controller.admission import pinning
from controller.resolver import ConfigCache
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    FakeConfigs,
    FakeResolver,
    cluster_policy,
    load,
    with_values,
)


def review(obj: Mapping[str, Any], policies: list[policy.Policy], **kw: Any) -> pinning.Review:
    return pinning.Review(operation="CREATE", namespace="ml", obj=obj, policies=policies, **kw)


async def test_require_digest_refuses_instead_of_pinning_and_resolves_nothing() -> None:
    strict = cluster_policy("strict-gitops", {"tags": {"requireDigest": True}})
    resolver = FakeResolver()
    decision = await pinning.Engine(resolver).mutate(review(load(DEPLOYMENT), [strict]))
    assert decision.denial is not None
    assert "ClusterModelKitPolicy/strict-gitops" in decision.denial.message
    assert "tags.requireDigest" in decision.denial.message
    assert resolver.calls == []
    assert [v.rule for v in decision.violations] == ["tags.requireDigest"]


async def test_validate_judges_the_reference_as_written_not_kitpins_own_pin() -> None:
    """The object was pinned by kitpin (annotation 'from' is the tag): requireDigest still
    sees a tag-only reference."""
    resolver = FakeResolver()
    engine = pinning.Engine(resolver)
    plain = load(DEPLOYMENT)
    pinned = with_values(plain, await engine.mutate(review(plain, [])))
    strict = cluster_policy("strict-gitops", {"tags": {"requireDigest": True}})
    decision = await engine.validate(review(pinned, [strict]))
    assert decision.denial is not None and "requireDigest" in decision.denial.message

    # A user who wrote the digest themselves satisfies the rule.
    own = load(DEPLOYMENT)
    own["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"{CANONICAL}@{resolver.digest(CANONICAL)}"
    )
    assert (await engine.validate(review(own, [strict]))).allowed


async def test_mutate_judges_an_object_kitpin_pinned_as_validate_does() -> None:
    """An UPDATE of a pinned object (a policy added since, a re-apply of `kubectl get -o
    yaml`): mutate refuses it with validate's words instead of passing it on."""
    resolver = FakeResolver()
    engine = pinning.Engine(resolver)
    pinned = with_values(load(DEPLOYMENT), await engine.mutate(review(load(DEPLOYMENT), [])))
    strict = cluster_policy("strict-gitops", {"tags": {"requireDigest": True}})
    update = pinning.Review(
        operation="UPDATE", namespace="ml", obj=pinned, old=pinned, policies=[strict]
    )
    mutated = await engine.mutate(update)
    validated = await engine.validate(update)
    assert mutated.denial is not None and validated.denial is not None
    assert mutated.denial.message == validated.denial.message
    assert f"'{CANONICAL}'" in mutated.denial.message  # as written, not kitpin's pin


async def test_warn_mode_pins_admits_and_warns_with_policy_and_rule() -> None:
    no_latest = cluster_policy(
        "no-production-tag", {"mode": "warn", "tags": {"denied": ["production"]}}
    )
    resolver = FakeResolver()
    engine = pinning.Engine(resolver)
    obj = load(DEPLOYMENT)
    mutated = await engine.mutate(review(obj, [no_latest]))
    assert mutated.allowed and mutated.values  # warn mode does not stop pinning
    decision = await engine.validate(review(with_values(obj, mutated), [no_latest]))
    assert decision.allowed
    assert decision.reason == policy.Reason.WARNED
    (warning,) = [w for w in decision.warnings if "no-production-tag" in w]
    assert "tags.denied" in warning and "production" in warning
    assert [(v.rule, v.mode) for v in decision.violations] == [("tags.denied", "warn")]


async def test_audit_mode_admits_silently_but_reports_the_violation() -> None:
    audit = cluster_policy("audit-tags", {"mode": "audit", "tags": {"denied": ["production"]}})
    decision = await pinning.Engine(FakeResolver()).validate(review(load(DEPLOYMENT), [audit]))
    assert decision.allowed and not [w for w in decision.warnings if "audit-tags" in w]
    assert [v.mode for v in decision.violations] == ["audit"]
    assert decision.reason == policy.Reason.AUDITED


async def test_format_rule_denies_a_kitops_modelkit_where_only_modelpack_is_allowed() -> None:
    only_modelpack = cluster_policy("modelpack-only", {"artifacts": {"formats": ["modelpack"]}})
    decision = await pinning.Engine(FakeResolver()).validate(
        review(load(DEPLOYMENT), [only_modelpack])
    )
    assert decision.denial is not None
    assert "modelpack-only" in decision.denial.message
    assert "artifacts.formats" in decision.denial.message


async def test_license_rule_reads_the_kitfile_through_the_config_cache_once() -> None:
    licensed = cluster_policy(
        "approved-licenses", {"artifacts": {"licenses": {"allowed": ["Apache-2.0"]}}}
    )
    configs = FakeConfigs(
        {"manifestVersion": "1.0", "package": {"name": "llama", "license": "GPL-3.0"}}
    )
    cache = ConfigCache(configs)
    engine = pinning.Engine(FakeResolver(), configs=cache)
    first = await engine.validate(review(load(DEPLOYMENT), [licensed]))
    assert first.denial is not None and "GPL-3.0" in first.denial.message
    await engine.validate(review(load(DEPLOYMENT), [licensed]))
    assert configs.calls == 1  # the second review hit the cache

    configs_ok = FakeConfigs({"manifestVersion": "1.0", "package": {"license": "Apache-2.0"}})
    ok = await pinning.Engine(FakeResolver(), configs=configs_ok).validate(
        review(load(DEPLOYMENT), [licensed])
    )
    assert ok.allowed, ok


async def test_cluster_policy_applies_only_to_selected_namespaces() -> None:
    prod_only = cluster_policy(
        "prod-digests",
        {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "tags": {"requireDigest": True}},
    )
    engine = pinning.Engine(FakeResolver())
    dev = await engine.mutate(
        review(load(DEPLOYMENT), [prod_only], namespace_labels={"env": "dev"})
    )
    assert dev.allowed
    prod = await engine.mutate(
        review(load(DEPLOYMENT), [prod_only], namespace_labels={"env": "prod"})
    )
    assert prod.denial is not None


async def test_a_forged_pin_record_cannot_steer_repository_or_tag_rules() -> None:
    """The annotation is user-writable: a record naming another repository or tag than the
    value it claims to have pinned is ignored; policy judges the value itself."""
    allowed_only = cluster_policy(
        "approved-repos",
        {
            "repositories": {"allowed": ["reg.example.com/approved/**"]},
            "tags": {"denied": ["latest"]},
        },
    )
    digest = "sha256:" + "d" * 64
    obj = load(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"reg.example.com/llama:latest@{digest}"
    )
    for forged_from in ("reg.example.com/approved/llama:v1", "reg.example.com/llama:v1"):
        obj["metadata"]["annotations"] = {
            pinning.PINNED_ANNOTATION: json.dumps(
                {ENV_PATH: {"from": forged_from, "digest": digest, "resolvedAt": "x"}}
            )
        }
        decision = await pinning.Engine(FakeResolver()).validate(review(obj, [allowed_only]))
        assert decision.denial is not None, forged_from
        assert "repositories.allowed" in decision.denial.message
        assert "reg.example.com/llama:latest" in decision.denial.message
