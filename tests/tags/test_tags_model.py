"""The pure model of ModelKitTag records: object names, the transitions of a status (moves,
stale answers, workloads, missing digests, trust on first use), their bounds, is_news (what a
cached review writes: nothing) and the wire form."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import errors, refs, types
from controller.tags import model, wire
from controller.tags.model import Checked, Missing, Pinned, Present, Resolved, Unpinned
from tests.tags.tagfakes import NOW, at, deployment, digest, key

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
A, B, C = digest("a"), digest("b"), digest("c")


def valid_name(name: str) -> bool:
    return len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name) is not None


def resolved(d: str, seconds: float = 0, **kw: object) -> Resolved:
    return Resolved(digest=d, at=at(seconds), seen_by=kw.pop("seen_by", "admission"), **kw)  # type: ignore[arg-type]


def status_of(*observations: model.Observation) -> model.TagStatus:
    status = model.apply_all(None, observations, now=NOW)
    assert status is not None
    return status


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "repository", "tag"),
    [
        ("reg.example", "org/llama", "production"),
        ("docker.io", "library/nginx", "latest"),
        ("localhost:5000", "a/b", "v1.2.3"),
        ("[::1]:5000", "m", "T"),
        ("MyRegistry", "x", "Tag_With.Dots-And_Under"),
        ("r.example", "a" * 245, "t" * 128),
        ("r.example", "a.b/c__d/e---f", "_leading-underscore"),
        ("reg.example", "org/llama", "7b-chat-q8_0"),
    ],
)
def test_names_are_valid_dns_subdomains_with_a_readable_prefix(
    registry: str, repository: str, tag: str
) -> None:
    k = model.TagKey(registry=registry, repository=repository, tag=tag)
    name = model.object_name(k)
    assert valid_name(name), name
    assert (
        name
        == k.name
        == model.object_name(model.TagKey(registry=registry, repository=repository, tag=tag))
    )
    hash_part = name.rsplit("-", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{16}", hash_part)


def test_names_read_like_the_reference() -> None:
    assert model.object_name(key()).startswith("reg.example-org-llama-production-")
    assert model.object_name(key(registry="localhost:5000")).startswith("localhost-5000-org-")
    assert model.object_name(key(tag="V1.0_rc")).startswith("reg.example-org-llama-v1.0-rc-")


def test_names_of_references_that_differ_only_in_case_or_punctuation_differ() -> None:
    names = {
        model.object_name(key(tag=t))
        for t in ("Prod", "prod", "PROD", "p_rod", "p-rod", "p.rod", "p__rod")
    }
    assert len(names) == 7
    assert model.object_name(key(registry="r.example:5000")) != model.object_name(
        key(registry="r.example", repository="5000/org/llama")
    )


def test_long_references_are_cut_but_stay_distinct() -> None:
    long_repo = "a/" * 120 + "x"
    k1, k2 = (
        key(repository=long_repo, tag="t" * 128),
        key(repository=long_repo, tag="t" * 127 + "u"),
    )
    n1, n2 = model.object_name(k1), model.object_name(k2)
    assert 240 < len(n1) <= 253 and 240 < len(n2) <= 253
    assert n1[:200] == n2[:200] and n1 != n2
    assert valid_name(n1) and valid_name(n2)


def test_a_name_never_ends_in_a_separator_after_cutting() -> None:
    # the cut falls right after a dot/dash in the readable part
    for pad in range(1, 40):
        k = key(registry="r.example", repository="a" * pad + "/" + "b." * 150 + "c")
        assert valid_name(model.object_name(k))


@given(
    st.text(min_size=1, max_size=300),
    st.text(min_size=1, max_size=300),
    st.text(min_size=1, max_size=200),
)
def test_any_key_gets_a_valid_name(registry: str, repository: str, tag: str) -> None:
    """Unicode, control characters, only punctuation: still a valid name (records written
    by someone else must not break the name function)."""
    assert valid_name(
        model.object_name(model.TagKey(registry=registry, repository=repository, tag=tag))
    )


@given(
    st.lists(
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
        min_size=2,
        max_size=30,
        unique=True,
    )
)
def test_distinct_tags_get_distinct_names(tags: list[str]) -> None:
    assert len({model.object_name(key(tag=t)) for t in tags}) == len(tags)


@pytest.mark.parametrize(
    ("text", "grammar"),
    [
        ("reg.example/org/llama:production", "kit"),
        ("docker.io/foo:v1", "kit"),  # kit: no library/
        ("nginx:1", "image"),  # docker.io/library/nginx
        ("localhost/model:v1", "image"),
        ("MyRegistry/model:v1", "image"),
        ("[::1]:5000/a/b:Tag", "kit"),
    ],
)
def test_reference_of_names_exactly_the_key(text: str, grammar: refs.Grammar) -> None:
    ref = refs.parse(text, grammar=grammar)
    k = model.key_of(ref)
    back = model.reference_of(k)
    assert model.key_of(back) == k and back.digest is None


def test_reference_of_a_key_no_reference_can_name() -> None:
    with pytest.raises(errors.ReferenceError):
        model.reference_of(model.TagKey(registry="reg.example", repository="Upper/Case", tag="t"))


def test_short_digest() -> None:
    assert model.short_digest(A) == A[7:19]


# --- transitions --------------------------------------------------------------------------


def test_first_resolution() -> None:
    w = deployment("llm")
    s = status_of(resolved(A, workload=w))
    assert (s.first_digest, s.first_seen, s.first_seen_by) == (A, NOW, "admission")
    assert s.current_digest == A and s.last_resolved == NOW and s.last_checked is None
    assert s.moves == 0 and s.history == () and s.in_use == 1
    assert s.use(A) is not None and s.use(A).workloads == (w,)  # type: ignore[union-attr]
    assert [(c.type, c.status, c.reason) for c in s.conditions] == [
        ("Moved", "False", "NotMoved"),
        ("DigestMissing", "False", "PinnedDigestsPresent"),
        ("ImmutableTagMoved", "False", "NoImmutableMove"),
    ]


def test_anything_but_a_resolution_of_an_unknown_tag_changes_nothing() -> None:
    for obs in (
        Checked(at=NOW),
        Pinned(digest=A, workload=deployment("x"), at=NOW),
        Missing(digest=A, at=NOW),
        Present(digest=A, at=NOW),
        Unpinned(workload=deployment("x")),
    ):
        assert model.apply(None, obs, now=NOW) is None
        assert not model.is_news(None, obs)
    assert model.is_news(None, resolved(A))


def test_a_move_seen_by_admission() -> None:
    s = status_of(resolved(A), resolved(B, 60))
    assert s.current_digest == B and s.moves == 1 and s.last_moved == at(60)
    assert s.history == (model.Move(from_digest=A, to_digest=B, at=at(60), seen_by="admission"),)
    assert s.first_digest == A  # the first sighting stays
    moved = s.condition("Moved")
    assert moved is not None and moved.status == "True" and moved.reason == "TagMoved"
    assert moved.last_transition == at(60) and A in moved.message and B in moved.message


def test_a_move_back_and_forth_is_two_moves() -> None:
    s = status_of(resolved(A), resolved(B, 60), resolved(A, 120, seen_by="watch"))
    assert s.current_digest == A and s.moves == 2
    assert [(m.from_digest, m.to_digest, m.seen_by) for m in s.history] == [
        (B, A, "watch"),
        (A, B, "admission"),
    ]
    assert s.last_checked == at(120)
    moved = s.condition("Moved")
    assert moved is not None and moved.last_transition == at(60)  # True since the first move


def test_an_older_answer_with_another_digest_is_not_a_move_back() -> None:
    """Replica 2's cache still holds A from before the move replica 1 saw: its workload is
    recorded under A, the tag stays at B."""
    w = deployment("old-cache")
    s = status_of(resolved(A, 0), resolved(B, 60), resolved(A, 30, workload=w))
    assert s.current_digest == B and s.moves == 1
    a = s.use(A)
    assert a is not None and a.workloads == (w,)


def test_the_same_answer_again_only_advances_last_resolved() -> None:
    s = status_of(resolved(A), resolved(A, 30))
    assert s.last_resolved == at(30) and s.moves == 0
    s2 = model.apply(s, resolved(A, 10), now=NOW)
    assert s2 is not None and s2.last_resolved == at(30)


def test_a_workload_pins_one_digest_of_a_tag() -> None:
    w = deployment("llm")
    s = status_of(resolved(A, workload=w), resolved(B, 60, workload=w))
    assert s.use(A).workloads == ()  # type: ignore[union-attr]
    assert s.use(B).workloads == (w,)  # type: ignore[union-attr]
    assert s.in_use == 1
    back = model.apply(s, Pinned(digest=A, workload=w, at=at(90)), now=NOW)
    assert back is not None
    assert back.use(A).workloads == (w,) and back.use(B).workloads == ()  # type: ignore[union-attr]


def test_a_workload_seen_in_another_api_version_is_the_same_workload() -> None:
    w1 = model.Workload(
        api_version="serving.kserve.io/v1beta1", kind="InferenceService", namespace="ml", name="m"
    )
    w2 = model.Workload(
        api_version="serving.kserve.io/v1", kind="InferenceService", namespace="ml", name="m"
    )
    s = status_of(resolved(A, workload=w1), resolved(A, 1, workload=w2))
    assert s.use(A).workloads == (w2,)  # type: ignore[union-attr]


def test_unpinned_leaves_one_digest_or_all() -> None:
    w, v = deployment("w"), deployment("v")
    s = status_of(
        resolved(A, workload=w),
        resolved(B, 60, workload=v),
        Pinned(digest=A, workload=v, at=at(61)),
    )
    assert s.use(A).workloads == (v, w)  # type: ignore[union-attr]
    s1 = model.apply(s, Unpinned(workload=v, digest=B), now=NOW)
    assert s1 is not None and s1.use(A).workloads == (v, w)  # type: ignore[union-attr]
    s2 = model.apply(s, Unpinned(workload=v), now=NOW)
    assert s2 is not None and s2.use(A).workloads == (w,) and s2.in_use == 1  # type: ignore[union-attr]


def test_missing_digest_sets_the_condition_only_while_workloads_pin_it() -> None:
    w = deployment("llm")
    s = status_of(resolved(A, workload=w), resolved(B, 60), Missing(digest=A, at=at(90)))
    missing = s.condition("DigestMissing")
    assert (
        missing is not None and missing.status == "True" and missing.reason == "PinnedDigestMissing"
    )
    assert A in missing.message and "Deployment/ml/llm" in missing.message
    assert missing.last_transition == at(90)
    assert s.use(A).missing_since == at(90)  # type: ignore[union-attr]
    again = model.apply(s, Missing(digest=A, at=at(400)), now=at(400))
    assert again is not None and again.use(A).missing_since == at(90)  # type: ignore[union-attr]
    assert not model.is_news(s, Missing(digest=A, at=at(400)))
    back = model.apply(s, Present(digest=A, at=at(500)), now=at(500))
    assert back is not None and back.condition("DigestMissing").status == "False"  # type: ignore[union-attr]
    assert back.use(A).missing_since is None  # type: ignore[union-attr]
    unused = status_of(resolved(A), resolved(B, 60), Missing(digest=A, at=at(90)))
    assert unused.condition("DigestMissing").status == "False"  # type: ignore[union-attr]


def test_a_resolution_clears_missing() -> None:
    s = status_of(
        resolved(A, workload=deployment("w")), Missing(digest=A, at=at(10)), resolved(A, 20)
    )
    assert s.use(A).missing_since is None  # type: ignore[union-attr]


def test_missing_of_an_unknown_digest_is_ignored() -> None:
    s = status_of(resolved(A))
    assert model.apply(s, Missing(digest=C, at=at(1)), now=NOW) == s
    assert not model.is_news(s, Missing(digest=C, at=at(1)))


def test_trust_on_first_use() -> None:
    s = status_of(resolved(A, immutable=True), resolved(A, 10, immutable=True))
    assert s.condition("ImmutableTagMoved").status == "False"  # type: ignore[union-attr]
    moved = model.apply(s, resolved(B, 60, immutable=True), now=at(60))
    assert moved is not None
    c = moved.condition("ImmutableTagMoved")
    assert c is not None and c.status == "True" and c.reason == "ImmutableTagMoved"
    assert A in c.message and B in c.message and types.rfc3339(NOW) in c.message
    assert "Push a new tag" in c.message and c.last_transition == at(60)
    # sticky: moving back or further keeps the first offence on record
    later = model.apply_all(
        moved, [resolved(A, 90, immutable=True), resolved(C, 120, immutable=True)], now=at(120)
    )
    assert later is not None and later.condition("ImmutableTagMoved") == c
    # without the policy, a move is only a move
    plain = model.apply(s, resolved(B, 60), now=at(60))
    assert plain is not None and plain.condition("ImmutableTagMoved").status == "False"  # type: ignore[union-attr]
    # a stale (older) answer of another digest under the policy is an offence too
    stale = model.apply(status_of(resolved(A, 100)), resolved(B, 50, immutable=True), now=at(100))
    assert stale is not None and stale.current_digest == A
    assert stale.condition("ImmutableTagMoved").status == "True"  # type: ignore[union-attr]


def test_checked_advances_last_checked() -> None:
    s = status_of(resolved(A), Checked(at=at(300)), Checked(at=at(200)))
    assert s.last_checked == at(300)


# --- bounds -------------------------------------------------------------------------------


def test_history_keeps_the_last_20_moves_and_counts_all() -> None:
    obs = [resolved(digest(str(i)), i) for i in range(26)]
    s = status_of(*obs)
    assert s.moves == 25 and len(s.history) == model.HISTORY_KEPT == 20
    assert s.history[0].to_digest == digest("25") and s.history[-1].to_digest == digest("6")


def test_digests_are_bounded_keeping_the_current_and_the_used() -> None:
    w = deployment("pinned-to-the-first")
    obs: list[model.Observation] = [resolved(digest("0"), 0, workload=w)]
    obs += [resolved(digest(str(i)), i) for i in range(1, 30)]
    s = status_of(*obs)
    assert len(s.digests) == model.DIGESTS_KEPT
    kept = {u.digest for u in s.digests}
    assert digest("0") in kept and digest("29") in kept  # in use; current
    assert kept == {digest("0")} | {digest(str(i)) for i in range(21, 30)}


def test_when_every_digest_is_used_the_least_recently_seen_goes() -> None:
    obs = [resolved(digest(str(i)), i, workload=deployment(f"w{i}")) for i in range(12)]
    s = status_of(*obs)
    assert {u.digest for u in s.digests} == {digest(str(i)) for i in range(2, 12)}
    assert s.in_use == 10


def test_workloads_listed_are_bounded_and_the_rest_counted() -> None:
    obs = [resolved(A, i, workload=deployment(f"w{i}")) for i in range(60)]
    s = status_of(*obs)
    use = s.use(A)
    assert use is not None and len(use.workloads) == model.WORKLOADS_LISTED == 50
    assert use.unlisted == 10 and use.workload_count == 60 and s.in_use == 60
    assert use.workloads[0].name == "w49" and use.workloads[-1].name == "w0"  # newest first, stable


# --- is_news: what a writer must store ----------------------------------------------------


def test_a_cached_review_is_not_news() -> None:
    w = deployment("llm")
    s = status_of(resolved(A, workload=w))
    assert not model.is_news(s, resolved(A, 30, workload=w))
    assert not model.is_news(s, resolved(A, 30))
    assert not model.is_news(s, Pinned(digest=A, workload=w, at=at(30)))
    assert model.is_news(s, resolved(A, 30, workload=deployment("other")))
    assert model.is_news(s, Pinned(digest=A, workload=deployment("other"), at=at(30)))
    assert model.is_news(s, resolved(B, 30))  # a move
    assert model.is_news(s, resolved(B, -30))  # an older digest never recorded
    assert model.is_news(s, resolved(A, 30, immutable=True)) is False
    assert model.is_news(s, Unpinned(workload=w)) and not model.is_news(
        s, Unpinned(workload=deployment("x"))
    )


def test_checks_are_news_now_and_then() -> None:
    s = status_of(resolved(A, seen_by="watch"))
    assert not model.is_news(s, Checked(at=at(300)), checked_every=3600)
    assert model.is_news(s, Checked(at=at(3600)), checked_every=3600)
    assert not model.is_news(s, resolved(A, 300, seen_by="watch"), checked_every=3600)
    never = status_of(resolved(A))
    assert model.is_news(never, Checked(at=at(1)))


def test_news_applied_changes_the_status_and_no_news_does_not() -> None:
    """is_news agrees with apply on the wire: what is not news changes only times
    (lastResolved, a digest's lastSeen), which ride along with the next write."""
    w = deployment("llm")
    base = status_of(resolved(A, workload=w), resolved(B, 60), Missing(digest=A, at=at(70)))
    candidates: list[model.Observation] = [
        resolved(B, 80),
        resolved(A, 10, workload=w),
        resolved(B, 90, workload=w),
        resolved(C, 100),
        Pinned(digest=A, workload=w, at=at(100)),
        Missing(digest=A, at=at(100)),
        Present(digest=A, at=at(100)),
        Missing(digest=C, at=at(100)),
        Unpinned(workload=w),
        Unpinned(workload=deployment("nobody")),
    ]
    for obs in candidates:
        after = model.apply(base, obs, now=at(100))
        assert after is not None
        changed = _timeless(after) != _timeless(base)
        if not model.is_news(base, obs):
            assert not changed, obs


def _timeless(status: model.TagStatus) -> dict[str, object]:
    doc = wire.status_to_wire(status, key())
    del doc["lastResolved"]
    for use in doc["digests"]:
        del use["lastSeen"]
    return doc


def test_coalesce_keys_ignore_only_the_time() -> None:
    w = deployment("w")
    assert model.coalesce_key(resolved(A, 1, workload=w)) == model.coalesce_key(
        resolved(A, 2, workload=w)
    )
    assert model.coalesce_key(resolved(A, 1, workload=w)) != model.coalesce_key(resolved(A, 1))
    assert model.coalesce_key(resolved(A, 1)) != model.coalesce_key(resolved(A, 1, immutable=True))
    assert model.coalesce_key(Checked(at=at(1))) == model.coalesce_key(Checked(at=at(9)))


# --- workloads of admitted objects --------------------------------------------------------


def test_workload_of_an_owner_level_object_is_itself() -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm"}}
    assert model.workload_of(obj, "ml") == deployment("llm")


def test_workload_of_a_deployments_pod_is_the_deployment() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "llm-7d9f8-",
            "labels": {"pod-template-hash": "7d9f8"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "llm-7d9f8",
                    "controller": True,
                }
            ],
        },
    }
    assert model.workload_of(pod, "ml") == deployment("llm")


def test_workload_of_a_jobs_pod_is_the_job() -> None:
    pod = {
        "kind": "Pod",
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-the-controller"},
                {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "controller": True},
            ]
        },
    }
    assert model.workload_of(pod, "ml") == model.Workload(
        api_version="batch/v1", kind="Job", namespace="ml", name="train"
    )


def test_workload_of_an_unnamed_object_is_none() -> None:
    assert model.workload_of({"kind": "Pod", "metadata": {"generateName": "x-"}}, "ml") is None
    assert model.workload_of({"metadata": {"name": "x"}}, "ml") is None


def test_mentions() -> None:
    obj = {"spec": {"a": [{"b": f"reg/x:t@{A}"}], "n": 1, "none": None}}
    assert model.mentions(obj, A) and not model.mentions(obj, B)


# --- the wire form -----------------------------------------------------------------------


def test_wire_round_trip() -> None:
    w = deployment("llm")
    s = status_of(
        resolved(A, workload=w, seen_by="watch"),
        resolved(B, 60, immutable=True),
        Pinned(digest=A, workload=deployment("old"), at=at(61)),
        Missing(digest=A, at=at(70)),
        Checked(at=at(80)),
        *[resolved(C, 100 + i, workload=deployment(f"c{i}")) for i in range(55)],
    )
    doc = wire.status_to_wire(s, key())
    assert json.loads(json.dumps(doc)) == doc
    assert doc["reference"] == "reg.example/org/llama:production"
    assert doc["shortDigest"] == C[7:19] and doc["inUse"] == s.in_use == 57
    assert wire.status_from_wire(doc) == s


def test_status_from_wire_is_lenient() -> None:
    assert wire.status_from_wire({}) is None
    assert (
        wire.status_from_wire({"currentDigest": A, "firstSeen": {"digest": A, "time": "nope"}})
        is None
    )
    doc = wire.status_to_wire(status_of(resolved(A, workload=deployment("w"))), key())
    doc["history"] = [{"from": A}, "junk", {"from": A, "to": B, "at": "2026-01-02T03:04:05Z"}]
    doc["digests"].append({"digest": B})
    doc["digests"][0]["workloads"].append({"kind": "Deployment"})
    doc["conditions"].append({"type": "Other", "status": "True"})
    doc["moves"] = -3
    s = wire.status_from_wire(doc)
    assert s is not None and len(s.history) == 1 and s.moves == 1
    assert [u.digest for u in s.digests] == [A] and len(s.digests[0].workloads) == 1
    assert {c.type for c in s.conditions} == set(model.ConditionType.ALL)


def test_new_object_and_a_record_without_status() -> None:
    body = wire.new_object(key(), resolved(A, seen_by="watch"))
    assert body["apiVersion"] == "kitpin.dev/v1alpha1" and body["kind"] == "ModelKitTag"
    assert body["metadata"]["name"] == key().name
    assert body["spec"] == {
        "registry": "reg.example",
        "repository": "org/llama",
        "tag": "production",
    }
    assert "status" not in body
    body["metadata"]["resourceVersion"] = "7"
    record = wire.record_from_object(body)
    assert record is not None and record.key == key() and record.resource_version == "7"
    assert not record.status_written
    assert record.status == model.initial(resolved(A, seen_by="watch"))


def test_a_record_with_status_reads_the_status() -> None:
    body = wire.new_object(key(), resolved(A))
    s = status_of(resolved(A), resolved(B, 60))
    body["status"] = wire.status_to_wire(s, key())
    record = wire.record_from_object(body)
    assert record is not None and record.status_written and record.status == s


def test_records_that_are_not_kitpins() -> None:
    assert wire.record_from_object({"metadata": {"name": "x"}, "spec": {"registry": "r"}}) is None
    body = wire.new_object(key(), resolved(A))
    body["metadata"]["annotations"][wire.FIRST_SEEN_ANNOTATION] = "{not json"
    record = wire.record_from_object(body)
    assert record is not None and record.status is None


def test_timestamps_are_rfc3339_seconds() -> None:
    s = status_of(resolved(A, 0.75))
    doc = wire.status_to_wire(s, key())
    assert doc["firstSeen"]["time"] == "2026-01-02T03:04:05Z"
    assert doc["lastResolved"] == types.rfc3339(NOW + timedelta(seconds=0.75))
