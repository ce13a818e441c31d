"""tags.immutable: parsed with tags.denied's glob validation, and evaluated as trust on first
use (the tag's first-seen digest is the truth)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from policy_fakes import NOW, cluster, evidence, manifest, sha

from controller import errors, policy, refs

REF = "reg.example.com/org/llama:7b-chat-q8_0"


def _problems(spec: Any) -> str:
    with pytest.raises(errors.ConfigError) as info:
        cluster("p", spec)
    return str(info.value)


def test_parsed_into_the_tag_rules() -> None:
    p = cluster("content", {"tags": {"immutable": ["7b-*", "v?"]}})
    assert p.tags is not None
    assert [g.pattern for g in p.tags.immutable] == ["7b-*", "v?"]
    assert p.rules == ("tags.immutable",)
    assert p.summary == "tags: immutable 7b-*,v?"
    assert p.tags.is_immutable("7b-chat-q8_0") is not None
    assert p.tags.is_immutable("v1") is not None and p.tags.is_immutable("production") is None
    assert p.mode_of("tags.immutable") == "enforce"


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"tags": {"immutable": "v*"}}, "spec.tags.immutable", "is a string, expected a list"),
        ({"tags": {"immutable": []}}, "spec.tags.immutable", "is empty"),
        ({"tags": {"immutable": ["v1", 3]}}, "spec.tags.immutable[1]", "is a number"),
        ({"tags": {"immutable": ["a", "a"]}}, "spec.tags.immutable[1]", "repeats"),
        ({"tags": {"immutable": ["rel/1"]}}, "spec.tags.immutable[0]", "is not a tag pattern"),
        ({"tags": {"immutable": ["-x"]}}, "spec.tags.immutable[0]", "cannot start with"),
        ({"tags": {"immutable": ["x" * 129]}}, "spec.tags.immutable[0]", "up to 128 characters"),
        ({"tags": {"immutable": [f"v{i}" for i in range(65)]}}, "spec.tags.immutable", "64"),
        ({"tags": {"mode": "warn"}}, "spec.tags", "states no rule"),
    ],
)
def test_errors_name_the_field(spec: Any, field: str, text: str) -> None:
    message = _problems(spec)
    assert f"{field}: " in message and text in message


def _ev(first: str | None, resolved: str, value: str = REF, **kw: Any) -> policy.Evidence:
    ev = evidence(value, manifest=dataclasses.replace(manifest(), digest=resolved), **kw)
    seen = None if first is None else policy.FirstSeen(digest=first, at=NOW)
    return dataclasses.replace(ev, first_seen=seen)


def _verdict(ev: policy.Evidence, mode: str = "enforce") -> policy.Verdict:
    p = cluster("content-tags", {"mode": mode, "tags": {"immutable": ["7b-*"]}})
    return policy.evaluate([p], namespace="ml", namespace_labels={}, evidence=[ev])


def test_the_first_seen_digest_passes() -> None:
    assert _verdict(_ev(sha("a"), sha("a"))).violations == ()


def test_no_record_yet_passes() -> None:
    assert _verdict(_ev(None, sha("b"))).violations == ()


def test_another_digest_is_denied_under_enforce_with_what_to_do() -> None:
    verdict = _verdict(_ev(sha("a"), sha("b")))
    assert verdict.outcome == "deny"
    (v,) = verdict.violations
    assert (v.rule, v.reason, v.mode) == ("tags.immutable", "ImmutableTagMoved", "enforce")
    assert v.message.startswith("ClusterModelKitPolicy/content-tags rule tags.immutable: ")
    assert "'7b-chat-q8_0'" in v.message and "'7b-*'" in v.message
    assert f"now resolves to {sha('b')}" in v.message
    assert f"first recorded digest was {sha('a')}, seen 2026-11-26T12:00:00Z" in v.message
    assert "push the new content under a new tag" in v.message
    assert f"{REF}@{sha('a')}" in v.message  # pin by digest
    assert "denied by ModelKit policy" in verdict.denial_message()


@pytest.mark.parametrize(("mode", "outcome"), [("warn", "warn"), ("audit", "audit")])
def test_warn_and_audit(mode: str, outcome: str) -> None:
    verdict = _verdict(_ev(sha("a"), sha("b")), mode)
    assert verdict.outcome == outcome and verdict.allowed
    assert [v.mode for v in verdict.violations] == [mode]


def test_a_tag_outside_the_patterns_or_written_with_a_digest_passes() -> None:
    other = "reg.example.com/org/llama:production"
    assert _verdict(_ev(sha("a"), sha("b"), value=other)).violations == ()
    by_digest = f"{REF}@{sha('b')}"
    assert _verdict(_ev(sha("a"), sha("b"), value=by_digest)).violations == ()


def test_judged_on_the_reference_as_written_after_kitpin_pinned_it() -> None:
    pinned = f"{REF}@{sha('b')}"
    assert _verdict(_ev(sha("a"), sha("b"), value=pinned, written=REF)).outcome == "deny"


def test_unresolved_is_unchecked_not_guessed() -> None:
    ev = dataclasses.replace(evidence(REF), first_seen=policy.FirstSeen(digest=sha("a"), at=NOW))
    verdict = _verdict(ev)
    assert verdict.violations == ()
    assert [u.rule for u in verdict.unchecked] == ["tags.immutable"]


def test_what_the_engine_asks() -> None:
    immutable = cluster("c", {"tags": {"immutable": ["7b-*"]}})
    denied = cluster("d", {"tags": {"denied": ["latest"]}})
    assert policy.needs_first_seen([immutable]) and not policy.needs_first_seen([denied])
    assert policy.needs_resolution([immutable]) and not policy.needs_resolution([denied])
    ref = refs.parse(REF, grammar="kit")
    assert policy.immutable_tag([denied, immutable], ref)
    assert not policy.immutable_tag([denied], ref)
