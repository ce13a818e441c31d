"""The engine and the ModelKitTag records: what it tells the recorder (every resolution at
admission, every digest kept on UPDATE, nothing for a dry run) and ``tags.immutable`` judged
on the first-seen digest the recorder knows."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import kopf
import pytest

from controller import kubeapi, policy, refs
from controller.admission import pinning
from controller.tags.settings import Counters, TagsSettings
from controller.tags.writer import ApiTagStore, TagWriter
from controller.types import Resolution
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    NOW,
    FakeResolver,
    cluster_policy,
    load,
    with_values,
)
from tests.tags.fakeapi import TagsApiServer, tags_api  # noqa: F401  (the fixture)
from tests.tags.tagfakes import api


class FakeRecorder:
    """A :class:`pinning.TagRecorder` that records every call; ``first`` is what
    :meth:`first_seen` answers per ``registry/repository:tag``."""

    def __init__(self) -> None:
        self.admissions: list[tuple[str, str, str, bool]] = []
        self.kept: list[tuple[str, str, str]] = []
        self.first: dict[str, tuple[str, datetime]] = {}
        self.asked: list[str] = []

    def observe_admission(
        self,
        resolution: Resolution,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        immutable: bool = False,
    ) -> bool:
        self.admissions.append(
            (resolution.reference.canonical, resolution.digest, namespace, immutable)
        )
        return True

    def observe_kept(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        at: datetime,
    ) -> bool:
        self.kept.append((ref.canonical, digest, namespace))
        return True

    def first_seen(self, ref: refs.Reference) -> tuple[str, datetime] | None:
        name = f"{ref.registry}/{ref.repository}:{ref.tag}"
        self.asked.append(name)
        return self.first.get(name)


def review(
    obj: Mapping[str, Any], policies: Sequence[policy.Policy] = (), **kw: Any
) -> pinning.Review:
    kw.setdefault("operation", "CREATE")
    return pinning.Review(namespace="ml", obj=obj, policies=list(policies), **kw)


def immutable_policy(mode: str = "enforce") -> policy.Policy:
    return cluster_policy("content-tags", {"mode": mode, "tags": {"immutable": ["prod*"]}})


# -- what the recorder is told --------------------------------------------------------------


async def test_every_resolution_at_admission_is_observed_once() -> None:
    resolver, recorder = FakeResolver(), FakeRecorder()
    engine = pinning.Engine(resolver, tags=recorder)
    decision = await engine.mutate(review(load(DEPLOYMENT)))
    assert decision.values[ENV_PATH].endswith(resolver.digest(CANONICAL))
    assert recorder.admissions == [(CANONICAL, resolver.digest(CANONICAL), "ml", False)]
    assert recorder.kept == []


async def test_a_tag_under_tags_immutable_is_observed_as_immutable() -> None:
    recorder = FakeRecorder()
    engine = pinning.Engine(FakeResolver(), tags=recorder)
    await engine.mutate(review(load(DEPLOYMENT), [immutable_policy()]))
    assert [a[3] for a in recorder.admissions] == [True]
    other = cluster_policy("others", {"tags": {"immutable": ["v*"]}})
    await engine.mutate(review(load(DEPLOYMENT), [other]))
    assert [a[3] for a in recorder.admissions] == [True, False]


async def test_a_kept_digest_is_observed_without_a_resolution() -> None:
    resolver, recorder = FakeResolver(), FakeRecorder()
    engine = pinning.Engine(resolver)
    created = with_values(load(DEPLOYMENT), await engine.mutate(review(load(DEPLOYMENT))))
    pinned_digest = resolver.digest(CANONICAL)
    resolver.move(CANONICAL)  # the tag moved: the re-apply keeps the old digest (rule 4)
    resolver.calls.clear()
    engine = pinning.Engine(resolver, tags=recorder)
    reapplied = load(DEPLOYMENT)
    decision = await engine.mutate(review(reapplied, operation="UPDATE", old=created))
    assert decision.values[ENV_PATH].endswith(pinned_digest)
    assert resolver.calls == []
    assert recorder.kept == [(CANONICAL, pinned_digest, "ml")]
    assert recorder.admissions == []


async def test_a_dry_run_tells_the_records_nothing() -> None:
    resolver, recorder = FakeResolver(), FakeRecorder()
    engine = pinning.Engine(resolver, tags=recorder)
    created = with_values(load(DEPLOYMENT), await engine.mutate(review(load(DEPLOYMENT))))
    recorder.admissions.clear()
    await engine.mutate(review(load(DEPLOYMENT), dry_run=True))
    await engine.mutate(review(load(DEPLOYMENT), operation="UPDATE", old=created, dry_run=True))
    await engine.validate(review(load(DEPLOYMENT), dry_run=True))
    assert recorder.admissions == [] and recorder.kept == []


async def test_validate_observes_only_references_kitpin_did_not_pin() -> None:
    resolver, recorder = FakeResolver(), FakeRecorder()
    engine = pinning.Engine(resolver, tags=recorder)
    pinned = with_values(load(DEPLOYMENT), await engine.mutate(review(load(DEPLOYMENT))))
    recorder.admissions.clear()
    assert (await engine.validate(review(pinned))).allowed
    assert recorder.admissions == []  # the pinned reference carries its digest
    # validate-only: the tag is resolved by the validating webhook alone
    assert (await engine.validate(review(load(DEPLOYMENT)))).allowed
    assert [a[0] for a in recorder.admissions] == [CANONICAL]


async def test_no_recorder_no_lookup() -> None:
    engine = pinning.Engine(FakeResolver())
    decision = await engine.mutate(review(load(DEPLOYMENT), [immutable_policy()]))
    assert decision.allowed


@pytest.fixture
async def client(
    tags_api: TagsApiServer,  # noqa: F811
) -> AsyncIterator[kubeapi.KubeAPI[kopf.ConnectionInfo]]:
    async with api(tags_api) as c:
        yield c


async def test_with_the_real_writer_a_cached_review_writes_nothing(
    tags_api: TagsApiServer,  # noqa: F811
    client: kubeapi.KubeAPI[kopf.ConnectionInfo],
) -> None:
    writer = TagWriter(ApiTagStore(client), settings=TagsSettings(), metrics=Counters())
    engine = pinning.Engine(FakeResolver(), tags=writer)
    await engine.mutate(review(load(DEPLOYMENT)))
    assert writer.pending == 1
    await writer.flush()
    writes = [(s.method, s.path) for s in tags_api.seen if s.method in ("POST", "PATCH")]
    assert [m for m, _ in writes] == ["POST", "PATCH"]
    for _ in range(100):  # the same Deployment again and again: nothing new
        await engine.mutate(review(load(DEPLOYMENT)))
    assert writer.pending == 0
    first = writer.first_seen(refs.parse(CANONICAL, grammar="kit"))
    assert first is not None and first[0] == FakeResolver().digest(CANONICAL)


# -- tags.immutable ---------------------------------------------------------------------------


async def pinned_after_move(
    mode: str = "enforce",
) -> tuple[FakeResolver, FakeRecorder, pinning.Engine, dict[str, Any], str]:
    """The tag was first seen at its first digest, then re-pushed; an admission pins the new
    digest. Returns the pinned object and the first digest."""
    resolver, recorder = FakeResolver(), FakeRecorder()
    first = resolver.digest(CANONICAL)
    recorder.first[CANONICAL] = (first, NOW)
    resolver.move(CANONICAL)
    engine = pinning.Engine(resolver, tags=recorder)
    policies = [immutable_policy(mode)]
    decision = await engine.mutate(review(load(DEPLOYMENT), policies))
    assert decision.allowed  # judged by the validating webhook, on the final object
    return resolver, recorder, engine, with_values(load(DEPLOYMENT), decision), first


async def test_enforce_denies_a_moved_immutable_tag_naming_tag_first_digest_and_when() -> None:
    resolver, _, engine, pinned, first = await pinned_after_move()
    decision = await engine.validate(review(pinned, [immutable_policy()]))
    assert decision.denial is not None
    message = decision.denial.message
    assert "ClusterModelKitPolicy/content-tags rule tags.immutable" in message
    assert "'production'" in message and first in message and "2026-11-26T12:00:00Z" in message
    assert resolver.digest(CANONICAL) in message
    assert "push the new content under a new tag" in message and f"@{first}" in message
    assert [(v.rule, v.reason) for v in decision.violations] == [
        ("tags.immutable", "ImmutableTagMoved")
    ]


async def test_warn_and_audit_admit_a_moved_immutable_tag() -> None:
    _, _, engine, pinned, _ = await pinned_after_move("warn")
    decision = await engine.validate(review(pinned, [immutable_policy("warn")]))
    assert decision.allowed
    assert any("tags.immutable" in w and "mode warn" in w for w in decision.warnings)
    _, _, engine, pinned, _ = await pinned_after_move("audit")
    decision = await engine.validate(review(pinned, [immutable_policy("audit")]))
    assert decision.allowed and decision.warnings == ()
    assert [v.mode for v in decision.violations] == ["audit"]


async def test_the_first_seen_digest_or_no_record_passes() -> None:
    resolver, recorder = FakeResolver(), FakeRecorder()
    engine = pinning.Engine(resolver, tags=recorder)
    policies = [immutable_policy()]
    pinned = with_values(load(DEPLOYMENT), await engine.mutate(review(load(DEPLOYMENT), policies)))
    assert (await engine.validate(review(pinned, policies))).violations == ()  # no record
    assert recorder.asked == [CANONICAL]
    recorder.first[CANONICAL] = (resolver.digest(CANONICAL), NOW)
    assert (await engine.validate(review(pinned, policies))).violations == ()  # same digest


async def test_a_digest_the_user_wrote_passes_and_the_old_pin_is_kept() -> None:
    resolver, _, engine, pinned, first = await pinned_after_move()
    own = load(DEPLOYMENT)
    own["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"{CANONICAL}@{resolver.digest(CANONICAL)}"
    )
    assert (await engine.validate(review(own, [immutable_policy()]))).allowed
    # An UPDATE of a Deployment pinned before the move keeps the first digest: allowed.
    before = copy.deepcopy(pinned)
    before["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"{CANONICAL}@{first}"
    )
    before["metadata"]["annotations"]["kitpin.dev/pinned"] = before["metadata"]["annotations"][
        "kitpin.dev/pinned"
    ].replace(resolver.digest(CANONICAL), first)
    decision = await engine.mutate(
        review(load(DEPLOYMENT), [immutable_policy()], operation="UPDATE", old=before)
    )
    updated = with_values(load(DEPLOYMENT), decision)
    assert updated["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"].endswith(
        first
    )
    assert (await engine.validate(review(updated, [immutable_policy()]))).allowed


async def test_the_records_are_not_asked_without_an_immutable_rule() -> None:
    _, recorder, engine, pinned, _ = await pinned_after_move()
    other = cluster_policy("other", {"tags": {"denied": ["latest"]}})
    assert (await engine.validate(review(pinned, [other]))).allowed
    assert recorder.asked == []
