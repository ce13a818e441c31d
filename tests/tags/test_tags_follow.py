"""Roll-forward, pure (controller.tags.follow): what a following workload becomes, and that
kitpin's own admission engine judges the re-pinned object by every policy, on the new digest,
as it judges any other object kitpin pinned (the update goes through its webhooks)."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest

from controller import policy, refs
from controller.admission import pinning, pins
from controller.tags import follow, model
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    FakeResolver,
    cluster_policy,
    load,
    with_values,
)
from tests.tags.tagfakes import NOW, at

KEY = model.key_of(refs.parse(CANONICAL, grammar="kit"))


async def pinned_deployment(resolver: FakeResolver, **annotations: str) -> dict[str, Any]:
    """DEPLOYMENT as kitpin admitted it (pinned to the tag's current digest)."""
    obj = load(DEPLOYMENT)
    obj["metadata"]["annotations"] = dict(annotations)
    engine = pinning.Engine(resolver)
    decision = await engine.mutate(pinning.Review(operation="CREATE", namespace="ml", obj=obj))
    return with_values(obj, decision)


def review(obj: dict[str, Any], old: dict[str, Any] | None = None, **kw: Any) -> pinning.Review:
    return pinning.Review(
        operation="UPDATE" if old is not None else "CREATE",
        namespace="ml",
        obj=obj,
        old=old,
        **kw,
    )


def test_the_pinned_annotation_is_the_admission_layers() -> None:
    assert follow.PINNED_ANNOTATION == pins.PINNED_ANNOTATION


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), (" true ", True), ("false", False), ("yes", False)],
)
def test_follows(value: str, expected: bool) -> None:
    obj = {"metadata": {"annotations": {follow.FOLLOW_ANNOTATION: value}}}
    assert follow.follows(obj) is expected
    assert not follow.follows({"metadata": {}})
    assert not follow.follows({"metadata": {"annotations": {follow.FOLLOW_ANNOTATION: True}}})


def test_pods_and_jobs_are_not_rolled() -> None:
    assert not follow.rollable({"kind": "Pod"}) and not follow.rollable({"kind": "Job"})
    assert follow.rollable({"kind": "Deployment"}) and follow.rollable({"kind": "CronJob"})


async def test_plan_re_pins_the_site_and_says_so_in_the_record() -> None:
    resolver = FakeResolver()
    old = resolver.digest(CANONICAL)
    obj = await pinned_deployment(resolver)
    resolver.move(CANONICAL)
    new = resolver.digest(CANONICAL)
    before = copy.deepcopy(obj)

    rolled = follow.plan(obj, KEY, old, new, at=at(30))

    assert rolled is not None
    assert obj == before  # copy-on-write
    assert rolled["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] == (
        f"{CANONICAL}@{new}"
    )
    text = rolled["metadata"]["annotations"][pins.PINNED_ANNOTATION]
    record = json.loads(text)[ENV_PATH]
    assert record == {
        "from": CANONICAL,
        "digest": new,
        "resolvedAt": "2026-01-02T03:04:35Z",
        "rolledForwardFrom": old,
        "rolledForwardAt": "2026-01-02T03:04:35Z",
    }
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


async def test_plan_leaves_other_tags_and_digests_the_user_wrote() -> None:
    resolver = FakeResolver()
    old = resolver.digest(CANONICAL)
    obj = await pinned_deployment(resolver)
    other = model.TagKey(registry="reg.example.com", repository="llama", tag="v1")
    assert follow.plan(obj, other, old, "sha256:" + "1" * 64, at=NOW) is None
    assert follow.plan(obj, KEY, "sha256:" + "2" * 64, "sha256:" + "1" * 64, at=NOW) is None
    # the same digest written by a person: no record, never rolled
    by_hand = copy.deepcopy(obj)
    del by_hand["metadata"]["annotations"][pins.PINNED_ANNOTATION]
    assert follow.plan(by_hand, KEY, old, "sha256:" + "1" * 64, at=NOW) is None
    # a record that does not match the value (forged or stale) is not followed either
    forged = copy.deepcopy(obj)
    forged["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"reg.example.com/llama:v1@{old}"
    )
    assert follow.plan(forged, KEY, old, "sha256:" + "1" * 64, at=NOW) is None


def test_plan_keeps_a_kit_uri_prefix() -> None:
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    obj = {
        "apiVersion": "e2e.kitpin.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "m",
            "annotations": {
                pins.PINNED_ANNOTATION: json.dumps(
                    {
                        "/spec/models/0/source": {
                            "from": "kit://reg.example.com/llama:production",
                            "digest": old,
                            "resolvedAt": "2026-01-01T00:00:00Z",
                        }
                    }
                )
            },
        },
        "spec": {"models": [{"source": f"kit://reg.example.com/llama:production@{old}"}]},
    }
    rolled = follow.plan(obj, KEY, old, new, at=NOW)
    assert rolled is not None
    assert rolled["spec"]["models"][0]["source"] == f"kit://reg.example.com/llama:production@{new}"


# -- the update through kitpin's own engine ---------------------------------------------------


async def test_the_mutating_webhook_keeps_the_rolled_object_as_it_is() -> None:
    """An UPDATE carrying the new digest and its record: nothing to pin, nothing to change
    (the record counts: policy sees the tag as the user wrote it)."""
    resolver = FakeResolver()
    old = resolver.digest(CANONICAL)
    live = await pinned_deployment(resolver, **{follow.FOLLOW_ANNOTATION: "true"})
    resolver.move(CANONICAL)
    new = resolver.digest(CANONICAL)
    rolled = follow.plan(live, KEY, old, new, at=at(30))
    assert rolled is not None
    engine = pinning.Engine(resolver)
    decision = await engine.mutate(review(rolled, live))
    assert decision.allowed and not decision.changes
    denied_tags = cluster_policy("digests-only", {"tags": {"requireDigest": True}})
    decision = await engine.mutate(review(rolled, live, policies=[denied_tags]))
    assert decision.denial is not None  # judged on the tag the user wrote, not kitpin's digest


async def test_the_validating_webhook_judges_the_new_digest_by_every_policy() -> None:
    resolver = FakeResolver()
    old = resolver.digest(CANONICAL)
    live = await pinned_deployment(resolver, **{follow.FOLLOW_ANNOTATION: "true"})
    resolver.move(CANONICAL)
    new = resolver.digest(CANONICAL)
    rolled = follow.plan(live, KEY, old, new, at=at(30))
    assert rolled is not None
    engine = pinning.Engine(resolver)
    resolver.calls.clear()
    assert (await engine.validate(review(rolled, live))).allowed
    assert resolver.calls == [(f"reg.example.com/llama@{new}", None)]  # the new digest

    # the new digest is not a ModelKit: denied
    resolver.formats["reg.example.com/llama"] = "other"
    decision = await engine.validate(review(rolled, live))
    assert decision.denial is not None and decision.reason == pinning.Reason.NOT_A_MODELKIT
    assert new in decision.denial.message
    resolver.formats.clear()

    # a policy on the artifact refuses it
    raw_only = cluster_policy("modelpack-only", {"artifacts": {"formats": ["modelpack"]}})
    decision = await engine.validate(review(rolled, live, policies=[raw_only]))
    assert decision.denial is not None
    assert "ClusterModelKitPolicy/modelpack-only" in decision.denial.message


async def test_an_immutable_tag_would_be_refused_too() -> None:
    """The watch never rolls a tag under tags.immutable; were it to, the webhook would deny
    the new digest against the first-seen one."""

    class FirstSeen:
        def __init__(self, digest: str, when: datetime) -> None:
            self.seen = (digest, when)

        def observe_admission(self, *args: Any, **kwargs: Any) -> bool:
            return False

        def observe_kept(self, *args: Any, **kwargs: Any) -> bool:
            return False

        def first_seen(self, ref: refs.Reference) -> tuple[str, datetime] | None:
            return self.seen

    resolver = FakeResolver()
    old = resolver.digest(CANONICAL)
    live = await pinned_deployment(resolver, **{follow.FOLLOW_ANNOTATION: "true"})
    resolver.move(CANONICAL)
    new = resolver.digest(CANONICAL)
    rolled = follow.plan(live, KEY, old, new, at=at(30))
    assert rolled is not None
    engine = pinning.Engine(resolver, tags=FirstSeen(old, NOW))
    immutable: policy.Policy = cluster_policy("content", {"tags": {"immutable": ["prod*"]}})
    decision = await engine.validate(review(rolled, live, policies=[immutable]))
    assert decision.denial is not None and "tags.immutable" in decision.denial.message
