"""``kitpin check`` and the validating webhook reach the same verdict on the same object.

Both judge what :func:`controller.admission.evidence.build` gives policy: on an object kitpin
pinned (``kubectl get deploy x -o yaml | kitpin check``) each reference as the user wrote it,
the ``from`` of its ``kitpin.dev/pinned`` record, so kitpin's own digest never satisfies
``tags.requireDigest``; a forged record (another repository or tag, or a claimed digest) is
ignored by both. The webhook side is :meth:`pinning.Engine.validate` with the engine's fake
resolver; ``kitpin check`` runs offline, and online with the same fake in place of the
registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from check_helpers import DEPLOYMENT_POINTER, REGISTRY, cluster_policy, deployment, rows, run_check

from controller import policy
from controller.admission import pinning
from controller.cli import common
from tests.admission.pinning_fakes import FakeConfigs, FakeResolver, with_values

NAMESPACE = "ml"
LABELS = {"kubernetes.io/metadata.name": NAMESPACE}
LLAMA = f"{REGISTRY}/ml/llama:v1"
DIGEST = "sha256:" + "d" * 64

REQUIRE_DIGEST = cluster_policy("strict-gitops", {"tags": {"requireDigest": True}})
APPROVED_ONLY = cluster_policy(
    "approved-repos",
    {
        "repositories": {"allowed": [f"{REGISTRY}/approved/**"]},
        "tags": {"denied": ["latest"]},
    },
)

Verdict = tuple[bool, list[tuple[str, str, str, str, str]]]
"""(denied, [(policy, rule, reason, mode, message) of each violation])."""


def load(text: str) -> dict[str, Any]:
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict)
    return obj


def with_pin_record(obj: dict[str, Any], value: str, record: Mapping[str, str]) -> dict[str, Any]:
    """``obj`` whose reference is ``value`` and whose ``kitpin.dev/pinned`` annotation holds
    ``record`` for it (as anyone allowed to edit the object may write it)."""
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"] = value
    obj["metadata"]["annotations"] = {
        pinning.PINNED_ANNOTATION: json.dumps({DEPLOYMENT_POINTER: dict(record)})
    }
    return obj


def webhook_verdict(
    resolver: FakeResolver, obj: Mapping[str, Any], policy_doc: Mapping[str, Any]
) -> Verdict:
    """What the validating webhook decides (``kitpin check`` runs its own event loop, so the
    tests are synchronous and so is this)."""
    policies = policy.parse_policies([policy_doc], default_namespace=NAMESPACE)
    review = pinning.Review(
        operation="CREATE",
        namespace=NAMESPACE,
        obj=obj,
        namespace_labels=LABELS,
        policies=policies,
    )
    decision = asyncio.run(pinning.Engine(resolver).validate(review))
    return decision.denial is not None, [
        (str(v.policy), v.rule, v.reason, v.mode, v.message) for v in decision.violations
    ]


def check_verdict(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    obj: Mapping[str, Any],
    policy_doc: Mapping[str, Any],
    *,
    offline: bool,
) -> Verdict:
    app = tmp_path / "deploy.yaml"
    app.write_text(yaml.safe_dump(dict(obj), sort_keys=False))  # as kubectl get -o yaml
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump(dict(policy_doc), sort_keys=False))
    args = ["-f", app, "--policy", policies, "-o", "json", *(["--offline"] if offline else [])]
    result = run_check(capsys, *args)
    assert result.code in (0, 1), result
    assert rows(result, "errors") == [], result
    return result.code == 1, [
        (v["policy"], v["rule"], v["reason"], v["mode"], v["message"])
        for v in rows(result, "violations")
    ]


@pytest.fixture(params=[True, False], ids=["offline", "online"])
def offline(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, resolver: FakeResolver
) -> bool:
    """``kitpin check --offline``, or online with ``resolver`` in place of the registry."""

    @contextlib.asynccontextmanager
    async def fake_registry(access: common.Access) -> AsyncIterator[tuple[Any, Any]]:
        yield FakeConfigs({}), resolver

    monkeypatch.setattr(common, "registry", fake_registry)
    return bool(request.param)


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


def test_an_object_kitpin_pinned_is_judged_as_the_user_wrote_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, resolver: FakeResolver, offline: bool
) -> None:
    written = load(deployment("llama", LLAMA, namespace=NAMESPACE))
    mutated = asyncio.run(
        pinning.Engine(resolver).mutate(
            pinning.Review(operation="CREATE", namespace=NAMESPACE, obj=written)
        )
    )
    pinned = with_values(written, mutated)  # what `kubectl get deploy llama -o yaml` prints
    assert mutated.values == {DEPLOYMENT_POINTER: f"{LLAMA}@{resolver.digest(LLAMA)}"}

    webhook = webhook_verdict(resolver, pinned, REQUIRE_DIGEST)
    check = check_verdict(capsys, tmp_path, pinned, REQUIRE_DIGEST, offline=offline)

    assert check == webhook
    denied, violations = check
    assert denied
    [(name, rule, _, mode, message)] = violations
    assert (name, rule, mode) == (
        "ClusterModelKitPolicy/strict-gitops",
        "tags.requireDigest",
        "enforce",
    )
    assert f"'{LLAMA}'" in message  # the reference as written, not kitpin's pin


def test_a_digest_the_user_wrote_satisfies_require_digest_in_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, resolver: FakeResolver, offline: bool
) -> None:
    obj = load(deployment("llama", f"{LLAMA}@{DIGEST}", namespace=NAMESPACE))

    webhook = webhook_verdict(resolver, obj, REQUIRE_DIGEST)
    check = check_verdict(capsys, tmp_path, obj, REQUIRE_DIGEST, offline=offline)

    assert check == webhook == (False, [])


@pytest.mark.parametrize(
    ("value", "forged_from", "rules"),
    [
        pytest.param(
            f"{REGISTRY}/ml/llama:latest@{DIGEST}",
            f"{REGISTRY}/approved/llama:v1",
            ["repositories.allowed", "tags.denied"],
            id="another-repository",
        ),
        pytest.param(
            f"{REGISTRY}/approved/llama:latest@{DIGEST}",
            f"{REGISTRY}/approved/llama:v1",
            ["tags.denied"],
            id="another-tag",
        ),
        pytest.param(
            f"{REGISTRY}/ml/llama:v1@{DIGEST}",
            f"{REGISTRY}/approved/llama:v1@{DIGEST}",
            ["repositories.allowed"],
            id="claims-a-digest",
        ),
    ],
)
def test_a_forged_pin_record_is_ignored_by_both(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    offline: bool,
    value: str,
    forged_from: str,
    rules: list[str],
) -> None:
    record = {"from": forged_from, "digest": DIGEST, "resolvedAt": "2026-11-26T12:00:00Z"}
    obj = with_pin_record(load(deployment("llama", LLAMA, namespace=NAMESPACE)), value, record)

    webhook = webhook_verdict(resolver, obj, APPROVED_ONLY)
    check = check_verdict(capsys, tmp_path, obj, APPROVED_ONLY, offline=offline)

    assert check == webhook
    denied, violations = check
    assert denied
    assert [rule for _, rule, _, _, _ in violations] == rules
    for *_, message in violations:  # the value itself is judged and quoted
        assert f"'{value}'" in message and forged_from not in message
