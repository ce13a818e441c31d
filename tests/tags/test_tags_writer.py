"""The background writer through a (fake) apiserver over real TLS: one create and one status
patch per new tag, one patch per move, nothing for a cached review, coalescing, the bounded
queue, optimistic concurrency (409 on the status: re-read, re-apply), and concurrent first
sightings on two replicas (the first create wins)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import kopf
import pytest

from controller import kubeapi, refs, types
from controller.tags import model, wire
from controller.tags.settings import Counters, TagsSettings
from controller.tags.writer import ApiTagStore, TagWriter, object_path
from tests.tags.fakeapi import TagsApiServer
from tests.tags.tagfakes import NOW, api, at, deployment, digest, key

A, B, C = digest("a"), digest("b"), digest("c")
K = key()
PATH = object_path(K.name)
COLLECTION = "/apis/kitpin.dev/v1alpha1/modelkittags"


def resolved(d: str, seconds: float = 0, **kw: Any) -> model.Resolved:
    return model.Resolved(digest=d, at=at(seconds), seen_by=kw.pop("seen_by", "admission"), **kw)


@pytest.fixture
async def client(tags_api: TagsApiServer) -> AsyncIterator[kubeapi.KubeAPI[kopf.ConnectionInfo]]:
    async with api(tags_api) as c:
        yield c


def writer(client: kubeapi.KubeAPI[kopf.ConnectionInfo], **settings: Any) -> TagWriter:
    return TagWriter(
        ApiTagStore(client),
        settings=TagsSettings(**settings),
        metrics=Counters(),
        now=lambda: at(1000),
    )


def writes(server: TagsApiServer) -> list[tuple[str, str]]:
    return [(s.method, s.path) for s in server.seen if s.method in ("POST", "PATCH", "PUT")]


def counters(w: TagWriter) -> Counters:
    assert isinstance(w.metrics, Counters)
    return w.metrics


async def test_a_new_tag_is_one_create_and_one_status_patch(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    assert w.observe(K, resolved(A, workload=deployment("llm")))
    assert w.pending == 1
    await w.flush()
    assert writes(tags_api) == [("POST", COLLECTION), ("PATCH", PATH + "/status")]
    created = tags_api.seen[0].body
    assert created["metadata"]["name"] == K.name and "status" not in created
    stored = tags_api.stored(PATH)
    patch = tags_api.requests("PATCH")[0].body
    created_rv = int(stored["metadata"]["resourceVersion"]) - 1  # the create's answer
    assert patch["metadata"] == {"resourceVersion": str(created_rv)}
    status = stored["status"]
    assert status["currentDigest"] == A and status["firstSeen"]["digest"] == A
    assert status["reference"] == "reg.example/org/llama:production" and status["inUse"] == 1
    assert status["digests"][0]["workloads"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "ml", "name": "llm"}
    ]
    assert dict(counters(w).writes) == {"create": 1, "status": 1}
    record = w.record(K)
    assert record is not None and record.status_written and record.status is not None
    assert record.resource_version == stored["metadata"]["resourceVersion"]
    assert w.pending == 0


async def test_a_cached_review_queues_nothing(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    w.observe(K, resolved(A, workload=deployment("llm")))
    await w.flush()
    before = len(tags_api.seen)
    for i in range(1000):
        assert not w.observe(K, resolved(A, i, workload=deployment("llm")))
        assert not w.observe(K, resolved(A, i))
    assert w.pending == 0
    await w.flush()
    assert len(tags_api.seen) == before


async def test_a_rollout_of_new_sightings_coalesces_into_one_create_and_one_patch(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    queued = [w.observe(K, resolved(A, i / 10, workload=deployment("llm"))) for i in range(500)]
    assert queued.count(True) == 1
    await w.flush()
    assert writes(tags_api) == [("POST", COLLECTION), ("PATCH", PATH + "/status")]


async def test_a_move_is_one_status_patch(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    w.observe(K, resolved(A, workload=deployment("llm")))
    await w.flush()
    before = len(writes(tags_api))
    for i in range(20):  # many reviews see the move before the flush
        w.observe(K, resolved(B, 60 + i, workload=deployment(f"new{i % 3}")))
    await w.flush()
    assert writes(tags_api)[before:] == [("PATCH", PATH + "/status")]
    status = tags_api.stored(PATH)["status"]
    assert status["currentDigest"] == B and status["moves"] == 1
    assert status["history"] == [
        {"from": A, "to": B, "at": "2026-01-02T03:05:05Z", "seenBy": "admission"}
    ]
    assert status["inUse"] == 4
    assert counters(w).moves == {"admission": 1}
    moved = next(c for c in status["conditions"] if c["type"] == "Moved")
    assert moved["status"] == "True"


async def test_a_status_conflict_is_re_read_and_re_applied(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """Another replica records a workload after this writer last saw the record: this
    writer's patch carries the old resourceVersion and gets 409; it reads again, applies its
    own observation to the newer status and patches once more. Both workloads are kept."""
    w = writer(client)
    w.observe(K, resolved(A, workload=deployment("first")))
    await w.flush()
    other = writer(client)
    other.remember(tags_api.stored(PATH))
    other.observe(K, resolved(A, 5, workload=deployment("by-the-other-replica")))
    await other.flush()
    w.observe(K, resolved(A, 6, workload=deployment("mine")))
    seen = len(tags_api.seen)
    await w.flush()
    assert [s.method for s in tags_api.seen[seen:]] == ["PATCH", "GET", "PATCH"]
    names = [x["name"] for x in tags_api.stored(PATH)["status"]["digests"][0]["workloads"]]
    assert names == ["mine", "by-the-other-replica", "first"]
    assert counters(w).writes["conflict"] == 1
    record = w.record(K)
    assert record is not None
    assert record.resource_version == tags_api.objects[PATH]["metadata"]["resourceVersion"]


async def test_the_first_create_wins(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """Two replicas see a new tag at once, at different digests (the tag moved in between):
    both create; the one whose create lands first decided firstSeen, the other gets 409
    AlreadyExists, reads the record and merges its sighting (a move, being newer)."""
    one, two = writer(client), writer(client)
    one.observe(K, resolved(A, 0, workload=deployment("one")))
    two.observe(K, resolved(B, 1, workload=deployment("two")))
    await asyncio.gather(one.flush(), two.flush())
    posts = [s for s in tags_api.seen if s.method == "POST"]
    assert len(posts) == 2
    stored = tags_api.stored(PATH)
    winner = stored["metadata"]["annotations"][wire.FIRST_SEEN_ANNOTATION]
    first = A if A in winner else B
    status = stored["status"]
    assert status["firstSeen"]["digest"] == first
    assert status["currentDigest"] == B  # the newer sighting wins the current digest
    assert status["moves"] == (1 if first == A else 0)
    assert status["inUse"] == 2
    total = counters(one).writes + counters(two).writes
    assert total["create"] == 1 and total["conflict"] >= 1


async def test_the_first_create_wins_whoever_writes_the_status_first(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """Replica one's create lands, then replica two (409 on its create) patches the status
    before replica one does: firstSeen is still replica one's, carried by its create."""
    one, two = writer(client), writer(client)
    one.observe(K, resolved(A, 0, workload=deployment("one")))
    two.observe(K, resolved(B, 1, workload=deployment("two")))
    one.remember(await ApiTagStore(client).create(wire.new_object(K, resolved(A, 0))))
    await two.flush()  # 409 AlreadyExists, read, merge, patch
    assert tags_api.stored(PATH)["status"]["firstSeen"]["digest"] == A
    seen = len(tags_api.seen)
    await one.flush()  # its patch carries the create's resourceVersion: 409 Conflict, merge
    assert [s.method for s in tags_api.seen[seen:]] == ["PATCH", "GET", "PATCH"]
    status = tags_api.stored(PATH)["status"]
    assert status["firstSeen"]["digest"] == A and status["currentDigest"] == B
    assert status["moves"] == 1 and status["inUse"] == 2


async def test_the_queue_is_bounded_and_drops_are_counted(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client, queue_size=3, observations_per_tag=2)
    for tag in ("a", "b", "c", "d", "e"):
        w.observe(key(tag=tag), resolved(A))
    assert w.pending == 3 and counters(w).drops == 2
    w.observe(key(tag="a"), resolved(A, 1, workload=deployment("x")))
    w.observe(key(tag="a"), resolved(A, 2, workload=deployment("y")))
    assert counters(w).drops == 3
    await w.flush()
    assert len([s for s in tags_api.seen if s.method == "POST"]) == 3


def test_observe_is_cheap() -> None:
    """Synchronous, no I/O: 100,000 observations of known tags in well under a second."""

    class NoStore:
        async def get(self, name: str) -> None:
            raise AssertionError

        create = patch_status = get

    w = TagWriter(NoStore(), now=lambda: NOW)  # type: ignore[arg-type]
    status = model.initial(resolved(A, workload=deployment("llm")))
    for i in range(100):
        k = key(tag=f"t{i}")
        w.remember(
            {
                **wire.new_object(k, resolved(A)),
                "status": wire.status_to_wire(status, k),
            }
        )
    keys = [key(tag=f"t{i}") for i in range(100)]
    obs = resolved(A, 5, workload=deployment("llm"))
    started = time.perf_counter()
    for _ in range(1000):
        for k in keys:
            w.observe(k, obs)
    assert time.perf_counter() - started < 2.0
    assert w.pending == 0


async def test_resolutions_from_the_resolver(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    ref = refs.parse("reg.example/org/llama:production", grammar="kit")
    manifest = types.Manifest(digest=A, media_type="x", size=1, format="kitops-modelkit")
    resolution = types.Resolution(
        reference=ref, digest=A, manifest=manifest, resolved_at=NOW, source="cache"
    )
    assert w.observe_resolution(resolution, workload=deployment("llm"), immutable=True)
    await w.flush()
    status = tags_api.stored(PATH)["status"]
    assert status["firstSeen"] == {
        "digest": A,
        "time": "2026-01-02T03:04:05Z",
        "seenBy": "admission",
    }


async def test_unreachable_keeps_the_observations_for_the_next_flush(
    tags_api: TagsApiServer,
) -> None:
    info = kopf.ConnectionInfo(server="https://127.0.0.1:1", ca_data=tags_api.ca_pem, token="t0k3n")
    async with kubeapi.KubeAPI(info, timeout=2.0) as unreachable:
        w = TagWriter(ApiTagStore(unreachable), metrics=Counters(), now=lambda: NOW)
        w.observe(K, resolved(A))
        await w.flush()
        assert w.pending == 1
        w.observe(K, resolved(A, 1, workload=deployment("later")))
    async with api(tags_api) as client:
        w._store = ApiTagStore(client)  # the apiserver is back
        await w.flush()
    assert w.pending == 0
    assert tags_api.stored(PATH)["status"]["inUse"] == 1


async def test_forbidden_is_given_up(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    tags_api.forbidden.add(COLLECTION)
    w = writer(client)
    w.observe(K, resolved(A))
    await w.flush()
    assert w.pending == 0 and counters(w).writes["failed"] == 1


async def test_a_deleted_record_is_created_again(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    w.observe(K, resolved(A))
    await w.flush()
    del tags_api.objects[PATH]  # an admin deleted it (to trust a new digest)
    w.observe(K, resolved(B, 60, workload=deployment("llm")))
    await w.flush()
    status = tags_api.stored(PATH)["status"]
    assert status["firstSeen"]["digest"] == B and status["moves"] == 0


async def test_the_watch_feeds_the_view(client: kubeapi.KubeAPI[kopf.ConnectionInfo]) -> None:
    w = writer(client)
    status = model.initial(resolved(A, workload=deployment("llm")))
    body = {**wire.new_object(K, resolved(A)), "status": wire.status_to_wire(status, K)}
    body["metadata"]["resourceVersion"] = "10"
    w.remember(body)
    older = {**body, "metadata": {**body["metadata"], "resourceVersion": "9"}, "status": {}}
    w.remember(older)  # a late event does not replace a newer answer
    record = w.record(K)
    assert record is not None and record.resource_version == "10" and record.status == status
    assert [r.key for r in w.records()] == [K]
    assert not w.observe(K, resolved(A, 3, workload=deployment("llm")))
    w.forget(K.name)
    assert w.record(K) is None and w.records() == []


async def test_checks_are_written_now_and_then(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client, checked_write_every=3600)
    w.observe(K, resolved(A, seen_by="watch"))
    await w.flush()
    assert not w.observe(K, model.Checked(at=at(300)))
    assert w.observe(K, model.Checked(at=NOW + timedelta(hours=1)))
    await w.flush()
    assert tags_api.stored(PATH)["status"]["lastChecked"] == "2026-01-02T04:04:05Z"


async def test_a_workload_beyond_the_list_is_counted_once(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client)
    for i in range(model.WORKLOADS_LISTED):
        w.observe(K, resolved(A, i, workload=deployment(f"w{i}")))
    await w.flush()
    assert w.observe(K, resolved(A, 100, workload=deployment("extra")))
    await w.flush()
    assert not w.observe(K, resolved(A, 101, workload=deployment("extra")))
    assert tags_api.stored(PATH)["status"]["inUse"] == model.WORKLOADS_LISTED + 1


async def test_run_flushes_in_the_background(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    w = writer(client, flush_interval=0.05)
    task = asyncio.create_task(w.run())
    try:
        w.observe(K, resolved(A))
        deadline = time.monotonic() + 10
        while "status" not in tags_api.objects.get(PATH, {}):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_admission_helpers(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """What the engine will call: the resolution with the admitted object (its owner-level
    workload), a kept digest on UPDATE, and the first-seen digest for tags.immutable."""
    w = writer(client)
    ref = refs.parse("reg.example/org/llama:production", grammar="kit")
    manifest = types.Manifest(digest=A, media_type="x", size=1, format="kitops-modelkit")
    resolution = types.Resolution(
        reference=ref, digest=A, manifest=manifest, resolved_at=NOW, source="registry"
    )
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm"}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"}}
    assert w.first_seen(ref) is None
    assert w.observe_admission(resolution, obj=deploy, namespace="ml")
    await w.flush()
    assert w.first_seen(ref) == (A, NOW)
    assert not w.observe_admission(resolution, obj=deploy, namespace="ml")  # nothing new
    assert w.observe_kept(ref, A, obj=job, namespace="ml", at=at(5))
    assert not w.observe_kept(ref, A, obj={"kind": "Pod", "metadata": {}}, namespace="ml", at=at(5))
    await w.flush()
    names = [x["name"] for x in tags_api.stored(PATH)["status"]["digests"][0]["workloads"]]
    assert names == ["train", "llm"]


# -- the cached review's memo -------------------------------------------------------------


def _resolution(d: str, seconds: float = 0) -> types.Resolution:
    ref = refs.parse("reg.example/org/llama:production", grammar="kit")
    manifest = types.Manifest(digest=d, media_type="x", size=1, format="kitops-modelkit")
    return types.Resolution(
        reference=ref, digest=d, manifest=manifest, resolved_at=at(seconds), source="cache"
    )


def _deploy(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}}


def _stored_with(w: TagWriter, status: model.TagStatus, rv: str) -> None:
    """The watch delivers a newer version of K's record with ``status``."""
    body = {**wire.new_object(K, resolved(A)), "status": wire.status_to_wire(status, K)}
    body["metadata"]["resourceVersion"] = rv
    w.remember(body)


async def test_a_cached_review_is_answered_from_the_memo_without_an_observation(
    tags_api: TagsApiServer,
    client: kubeapi.KubeAPI[kopf.ConnectionInfo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the first no-news comparison, the same tag at the same digest for a known
    workload is answered without building an observation or comparing the status."""
    w = writer(client)
    assert w.observe_admission(_resolution(A), obj=_deploy("llm"), namespace="ml")
    await w.flush()
    assert not w.observe_admission(_resolution(A, 1), obj=_deploy("llm"), namespace="ml")

    def no_comparison(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("a cached review compared the status")

    monkeypatch.setattr(model, "is_news", no_comparison)
    for i in range(100):
        assert not w.observe_admission(_resolution(A, i), obj=_deploy("llm"), namespace="ml")
    monkeypatch.undo()
    # news still gets through: another workload, another digest
    assert w.observe_admission(_resolution(A, 2), obj=_deploy("other"), namespace="ml")
    assert w.observe_admission(_resolution(B, 60), obj=_deploy("llm"), namespace="ml")
    assert w.pending == 1


async def test_the_memo_is_forgotten_when_the_record_changes(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """The drift watch (or another replica) takes the workload off the record: the memo of
    the old version must not hide the next review's news."""
    w = writer(client)
    w.observe_admission(_resolution(A), obj=_deploy("llm"), namespace="ml")
    await w.flush()
    assert not w.observe_admission(_resolution(A, 1), obj=_deploy("llm"), namespace="ml")
    record = w.record(K)
    assert record is not None and record.status is not None
    unpinned = model.apply(record.status, model.Unpinned(workload=deployment("llm")), now=at(2))
    assert unpinned is not None
    _stored_with(w, unpinned, "999999")
    assert w.observe_admission(_resolution(A, 3), obj=_deploy("llm"), namespace="ml")
    w.forget(K.name)  # deleted: the next review starts a record again
    await w.flush()
    assert w.record(K) is not None


async def test_the_memo_never_hides_an_immutable_move(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """A tag that moved before a tags.immutable rule was written: cached reviews without
    the rule are no news; the first one under the rule is (ImmutableTagMoved), and once the
    condition is recorded it is settled."""
    w = writer(client)
    w.observe_admission(_resolution(A), obj=_deploy("llm"), namespace="ml")
    await w.flush()
    w.observe_admission(_resolution(B, 60), obj=_deploy("llm"), namespace="ml")
    await w.flush()
    assert not w.observe_admission(_resolution(B, 61), obj=_deploy("llm"), namespace="ml")
    assert w.observe_admission(
        _resolution(B, 62), obj=_deploy("llm"), namespace="ml", immutable=True
    )
    await w.flush()
    status = tags_api.stored(PATH)["status"]
    moved = next(c for c in status["conditions"] if c["type"] == "ImmutableTagMoved")
    assert moved["status"] == "True"
    assert not w.observe_admission(
        _resolution(B, 63), obj=_deploy("llm"), namespace="ml", immutable=True
    )
    assert not w.observe_admission(
        _resolution(B, 64), obj=_deploy("llm"), namespace="ml", immutable=True
    )


async def test_each_object_gets_its_own_workload(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    """The workload is computed once per admitted object (a review with several
    references), never carried over to the next object."""
    w = writer(client)
    w.observe_admission(_resolution(A), obj=_deploy("one"), namespace="ml")
    await w.flush()
    assert not w.observe_admission(_resolution(A, 1), obj=_deploy("one"), namespace="ml")
    assert w.observe_admission(_resolution(A, 2), obj=_deploy("two"), namespace="ml")
    assert w.observe_admission(_resolution(A, 3), obj=_deploy("one"), namespace="other")
    await w.flush()
    status = tags_api.stored(PATH)["status"]
    assert status["inUse"] == 3


def test_a_cached_review_costs_next_to_nothing() -> None:
    """The admission path's hook for a cached review: a memo lookup. 200,000 in well under
    a second (a review costs ~300 us of CPU; this must be a fraction of a microsecond)."""

    class NoStore:
        async def get(self, name: str) -> None:
            raise AssertionError

        create = patch_status = get

    w = TagWriter(NoStore(), now=lambda: NOW)  # type: ignore[arg-type]
    status = model.initial(resolved(A, workload=deployment("llm")))
    w.remember({**wire.new_object(K, resolved(A)), "status": wire.status_to_wire(status, K)})
    obj = _deploy("llm")
    resolution = _resolution(A, 5)
    assert not w.observe_admission(resolution, obj=obj, namespace="ml")
    started = time.perf_counter()
    for _ in range(200_000):
        w.observe_admission(resolution, obj=obj, namespace="ml")
    assert time.perf_counter() - started < 1.0
    assert w.pending == 0
