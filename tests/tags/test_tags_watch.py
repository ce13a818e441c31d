"""The drift watch with fake Protocols (registry, workloads, Events, the book of records) and
a clock the fakes step (no sleeping): HEAD only when nothing changed, a verified GET on a move,
TagMoved / ImmutableTagMoved / PinnedDigestMissing Events on the workloads that still pin the
old digest (none on deleted ones), the per-registry budget, the order of checks, the loop."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

import pytest

from controller import kubeapi, refs, sites, types
from controller.tags import model, watch
from controller.tags.settings import Counters, TagsSettings
from controller.tags.watch import Budget, DriftWatch
from tests.tags.fakeapi import TagsApiServer
from tests.tags.tagfakes import (
    ENV_POINTER,
    FakeBook,
    FakeClock,
    FakeEvents,
    FakeRegistry,
    FakeWorkloads,
    api,
    at,
    deployment,
    digest,
    key,
)

A, B, C = digest("a"), digest("b"), digest("c")
K = key()
TAG = "reg.example/org/llama:production"


class Env:
    def __init__(self, **settings: object) -> None:
        self.clock = FakeClock()
        self.registry = FakeRegistry(self.clock)
        self.book = FakeBook(self.clock)
        self.workloads = FakeWorkloads()
        self.events = FakeEvents()
        self.immutable: set[model.TagKey] = set()
        self.metrics = Counters()
        self.watch = DriftWatch(
            self.book,
            self.registry,
            workloads=self.workloads,
            events=self.events,
            immutable=lambda k: k in self.immutable,
            settings=TagsSettings(**settings),  # type: ignore[arg-type]
            metrics=self.metrics,
            clock=self.clock,
            now=self.clock.now,
            sleep=self.clock.sleep,
        )

    def pin(self, k: model.TagKey, d: str, *names: str, seconds: float = 0) -> None:
        for name in names:
            w = deployment(name)
            self.book.seed(
                k, model.Resolved(digest=d, at=at(seconds), seen_by="admission", workload=w)
            )
            self.workloads.add(w, d)
        if not names:
            self.book.seed(k, model.Resolved(digest=d, at=at(seconds), seen_by="admission"))

    def status(self, k: model.TagKey = K) -> model.TagStatus:
        return self.book.statuses[k]


async def test_an_unchanged_tag_costs_one_head() -> None:
    env = Env()
    env.registry.tags[TAG] = A
    env.pin(K, A, "llm")
    await env.watch.cycle()
    assert [c[1:] for c in env.registry.calls] == [("HEAD", TAG)]
    assert env.book.kinds(K) == ["Checked"]
    assert env.status().last_checked == env.clock.now()
    assert env.events.emitted == []
    assert env.metrics.checks == {("reg.example", "unchanged"): 1}


async def test_tags_nobody_pins_are_not_checked() -> None:
    env = Env()
    env.registry.tags[TAG] = B
    env.pin(K, A)  # resolved once, no workload recorded
    await env.watch.cycle()
    assert env.registry.calls == []


async def test_a_move_gets_a_verified_get_and_tag_moved_events() -> None:
    env = Env()
    env.pin(K, A, "llm", "also-on-a")
    env.registry.tags[TAG] = B  # the tag moved in the registry
    env.registry.digests.add(f"reg.example/org/llama@{A}")  # the old digest still exists
    await env.watch.cycle()
    assert [c[1:] for c in env.registry.calls] == [
        ("HEAD", TAG),
        ("GET", f"reg.example/org/llama@{B}"),  # by digest: the client verifies the bytes
        ("HEAD", f"reg.example/org/llama@{A}"),  # the old digest workloads still pin
    ]
    s = env.status()
    assert s.current_digest == B and s.moves == 1
    moved_at = at(env.registry.requests("GET")[0][0] - 1000.0)
    assert s.history[0] == model.Move(from_digest=A, to_digest=B, at=moved_at, seen_by="watch")
    assert sorted(env.events.reasons()) == [
        ("also-on-a", "Normal", "TagMoved"),
        ("llm", "Normal", "TagMoved"),
    ]
    message = env.events.emitted[0][3]
    assert A in message and B in message and f"kubectl describe mkt {K.name}" in message
    assert env.metrics.checks[("reg.example", "moved")] == 1


async def test_events_only_for_workloads_that_still_pin_the_old_digest() -> None:
    env = Env()
    env.pin(K, A, "llm", "deleted", "repinned")
    del env.workloads.objects[deployment("deleted").key]
    env.workloads.add(deployment("repinned"), C)  # changed since, without kitpin seeing it
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    assert env.events.reasons() == [("llm", "Normal", "TagMoved")]
    use = env.status().use(A)
    assert use is not None and [w.name for w in use.workloads] == ["llm"]
    unpinned = [o for k, o in env.book.observed if isinstance(o, model.Unpinned)]
    assert {(o.workload.name, o.digest) for o in unpinned} == {("deleted", None), ("repinned", A)}


async def test_a_move_is_announced_once() -> None:
    env = Env()
    env.pin(K, A, "llm")
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    await env.watch.cycle()
    assert len(env.events.emitted) == 1
    # even if the record did not catch up (the writer had not written it yet)
    env2 = Env()
    env2.pin(K, A, "llm")
    env2.registry.tags[TAG] = B
    env2.registry.digests.add(f"reg.example/org/llama@{A}")
    env2.book.observe = lambda key, obs: True  # type: ignore[method-assign]  # never catches up
    await env2.watch.cycle()
    await env2.watch.cycle()
    assert len(env2.events.emitted) == 1


async def test_a_content_tag_under_tags_immutable_that_moved() -> None:
    env = Env()
    env.immutable.add(K)
    env.pin(K, A, "llm")
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    assert env.events.reasons() == [("llm", "Warning", "ImmutableTagMoved")]
    assert "tags.immutable" in env.events.emitted[0][3]
    condition = env.status().condition(model.ConditionType.IMMUTABLE_TAG_MOVED)
    assert condition is not None and condition.status == "True"


async def test_a_pinned_digest_gone_from_the_registry() -> None:
    env = Env()
    env.pin(K, A, "llm", seconds=0)
    env.pin(K, B, "newer", seconds=60)  # the tag moved to B; llm still pins A
    env.registry.tags[TAG] = B  # A was garbage-collected: not tagged, not kept
    await env.watch.cycle()
    assert [c[1:] for c in env.registry.calls] == [
        ("HEAD", TAG),
        ("HEAD", f"reg.example/org/llama@{A}"),
    ]
    assert env.events.reasons() == [("llm", "Warning", "PinnedDigestMissing")]
    assert A in env.events.emitted[0][3] and B in env.events.emitted[0][3]
    assert env.status().use(A).missing_since == env.clock.now()  # type: ignore[union-attr]
    missing = env.status().condition(model.ConditionType.DIGEST_MISSING)
    assert missing is not None and missing.status == "True"
    assert env.metrics.checks[("reg.example", "digest-missing")] == 1
    await env.watch.cycle()  # still missing: no second Event
    assert len(env.events.emitted) == 1
    env.registry.digests.add(f"reg.example/org/llama@{A}")  # pushed again
    await env.watch.cycle()
    assert env.status().use(A).missing_since is None  # type: ignore[union-attr]
    assert env.status().condition(model.ConditionType.DIGEST_MISSING).status == "False"  # type: ignore[union-attr]


async def test_a_deleted_tag_checks_every_pinned_digest() -> None:
    env = Env()
    env.pin(K, A, "llm")
    env.registry.digests.add(f"reg.example/org/llama@{A}")  # the tag is gone, the digest not
    await env.watch.cycle()
    assert [c[1:] for c in env.registry.calls] == [
        ("HEAD", TAG),
        ("HEAD", f"reg.example/org/llama@{A}"),
    ]
    assert env.metrics.checks[("reg.example", "tag-missing")] == 1
    assert env.events.emitted == [] and env.status().current_digest == A


async def test_registry_errors_are_counted_and_the_pass_goes_on() -> None:
    env = Env()
    other = key(registry="down.example")
    env.pin(other, A, "on-down")
    env.pin(K, A, "llm")
    env.registry.failing.add("down.example")
    env.registry.tags[TAG] = A
    await env.watch.cycle()
    assert env.metrics.checks[("down.example", "error")] == 1
    assert env.metrics.checks[("reg.example", "unchanged")] == 1


async def test_the_budget_paces_requests_per_registry() -> None:
    """130 tags on one registry, 60 requests a minute: a request every second, never more
    than 60 in any minute; another registry is checked meanwhile, not after."""
    env = Env(budget_per_minute=60)
    for i in range(130):
        k = key(tag=f"t{i}")
        env.pin(k, A, f"w{i}")
        env.registry.tags[f"reg.example/org/llama:t{i}"] = A
    for i in range(10):
        k = key(tag=f"t{i}", registry="other.example")
        env.pin(k, A, f"o{i}")
        env.registry.tags[f"other.example/org/llama:t{i}"] = A
    start = env.clock()
    await env.watch.cycle()
    times = sorted(t for t, _, ref in env.registry.calls if ref.startswith("reg.example"))
    assert len(times) == 130
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    for t in times:
        assert sum(1 for u in times if t <= u < t + 60) <= 60
    others = [t for t, _, ref in env.registry.calls if ref.startswith("other.example")]
    assert max(others) - start <= 10  # in parallel with the busy registry
    assert env.metrics.budget_waits["reg.example"] >= 129


async def test_budget_reserves_slots_for_concurrent_callers() -> None:
    clock = FakeClock()
    budget = Budget(6, clock=clock, sleep=clock.sleep)  # one per 10 s
    taken: list[float] = []

    async def take() -> None:
        await budget.take("r")
        taken.append(clock())

    await asyncio.gather(*(take() for _ in range(3)))
    assert budget.spacing == 10
    assert len(taken) == 3
    with pytest.raises(ValueError):
        Budget(0)


async def test_least_recently_checked_first() -> None:
    env = Env(budget_per_minute=60)
    for tag in ("a", "b", "c"):
        env.pin(key(tag=tag), A, f"w-{tag}")
        env.registry.tags[f"reg.example/org/llama:{tag}"] = A
    env.book.seed(key(tag="a"), model.Checked(at=at(500)))
    env.book.seed(key(tag="b"), model.Checked(at=at(100)))
    order = [r.key.tag for r in env.watch.due()["reg.example"]]
    assert order == ["c", "b", "a"]  # never checked first, then oldest check
    await env.watch.check(next(r for r in env.book.records() if r.key.tag == "c"))
    order = [r.key.tag for r in env.watch.due()["reg.example"]]
    assert order == ["b", "a", "c"]  # what this replica checked goes last


async def test_run_waits_the_rest_of_the_interval() -> None:
    env = Env(drift_interval=300, budget_per_minute=60)
    env.pin(K, A, "llm")
    env.registry.tags[TAG] = A
    passes = 0
    real_cycle = env.watch.cycle

    async def cycle() -> None:
        nonlocal passes
        passes += 1
        env.clock.advance(40)  # a pass that takes 40 s
        await real_cycle()
        if passes == 3:
            raise asyncio.CancelledError

    env.watch.cycle = cycle  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await env.watch.run()
    assert env.clock.slept == [260.0, 260.0]  # 300 s from the start of each pass


async def test_run_survives_a_failing_pass() -> None:
    env = Env()
    calls = 0

    async def cycle() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        raise asyncio.CancelledError

    env.watch.cycle = cycle  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await env.watch.run()
    assert calls == 2


async def test_credentials_for_the_namespaces_that_use_the_tag() -> None:
    seen: list[tuple[str, Sequence[str]]] = []
    cred = types.Credential(username="u", password="p", source="test")

    class Creds:
        async def credential(
            self, ref: refs.Reference, *, namespaces: Sequence[str]
        ) -> types.Credential | None:
            seen.append((ref.canonical, namespaces))
            return cred

    class Registry(FakeRegistry):
        async def head_digest(
            self, ref: refs.Reference, *, credential: types.Credential | None = None
        ) -> str:
            assert credential is cred
            return await super().head_digest(ref, credential=credential)

    env = Env()
    env.registry = Registry(env.clock, tags={TAG: A})
    env.pin(K, A, "llm")
    env.book.seed(K, model.Pinned(digest=A, workload=deployment("x", namespace="team"), at=at(1)))
    w = DriftWatch(
        env.book,
        env.registry,
        credentials=Creds(),
        clock=env.clock,
        now=env.clock.now,
        sleep=env.clock.sleep,
    )
    await w.cycle()
    assert seen == [(TAG, ["ml", "team"])]


async def test_without_workload_access_no_events() -> None:
    env = Env()
    env.pin(K, A, "llm")
    env.registry.tags[TAG] = B
    w = DriftWatch(
        env.book, env.registry, clock=env.clock, now=env.clock.now, sleep=env.clock.sleep
    )
    await w.cycle()
    assert env.status().current_digest == B


def test_plurals_and_paths() -> None:
    assert watch.plural_of("Deployment") == "deployments"
    assert watch.plural_of("InferenceService") == "inferenceservices"
    assert watch.plural_of("Policy") == "policies"
    assert watch.plural_of("Gateway") == "gateways"
    assert watch.plural_of("Ingress") == "ingresses"
    assert watch.workload_path(deployment("llm")) == "/apis/apps/v1/namespaces/ml/deployments/llm"
    pod = model.Workload(api_version="v1", kind="Pod", namespace="ml", name="p")
    assert watch.workload_path(pod) == "/api/v1/namespaces/ml/pods/p"


async def test_api_workloads_and_events(tags_api: TagsApiServer) -> None:
    w = deployment("llm")
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm", "namespace": "ml", "uid": "u-1"},
    }
    tags_api.put("/apis/apps/v1/namespaces/ml/deployments/llm", obj)
    clock = FakeClock()
    async with api(tags_api) as client:
        workloads = watch.ApiWorkloads(client)
        live = await workloads.get(w)
        assert live is not None and live["metadata"]["uid"] == "u-1"
        assert await workloads.get(deployment("gone")) is None
        events = watch.ApiEvents(client, now=clock.now, instance="kitpin-0")
        await events.emit(
            live, event_type="Warning", reason="PinnedDigestMissing", message="x" * 2000
        )
        tags_api.forbidden.add("/api/v1/namespaces/ml/events")
        with pytest.raises(kubeapi.ForbiddenError):
            await events.emit(live, event_type="Normal", reason="TagMoved", message="m")
    post = next(s for s in tags_api.seen if s.method == "POST")
    assert post.path == "/api/v1/namespaces/ml/events"
    event = post.body
    assert (
        event["involvedObject"]["uid"] == "u-1" and event["involvedObject"]["kind"] == "Deployment"
    )
    assert event["type"] == "Warning" and event["reason"] == "PinnedDigestMissing"
    assert len(event["message"]) == 1024 and event["reportingInstance"] == "kitpin-0"
    assert event["firstTimestamp"] == "2026-01-02T03:04:05Z"


async def test_event_failures_do_not_stop_the_watch() -> None:
    env = Env()
    env.pin(K, A, "llm", "other")
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")

    class Failing(FakeEvents):
        async def emit(self, obj: object, **kw: object) -> None:
            raise kubeapi.UnreachableError("down")

    env.watch._events = Failing()
    await env.watch.cycle()
    assert env.status().current_digest == B


async def test_a_record_naming_no_reference_is_skipped() -> None:
    env = Env()
    bad = model.TagKey(registry="reg.example", repository="Upper/Case", tag="t")
    env.pin(bad, A, "llm")
    await env.watch.cycle()
    assert env.registry.calls == []


# -- roll-forward (kitpin.dev/follow) ---------------------------------------------------------


def follower(env: Env, name: str, d: str, *, seconds: float = 0) -> model.Workload:
    w = deployment(name)
    env.book.seed(K, model.Resolved(digest=d, at=at(seconds), seen_by="admission", workload=w))
    env.workloads.add(w, d, follows=True)
    return w


def value_of(obj: dict[str, object]) -> str:
    value = sites.get(obj, ENV_POINTER)
    assert isinstance(value, str)
    return value


async def test_a_follower_is_rolled_forward_when_the_watch_sees_the_move() -> None:
    env = Env()
    llm = follower(env, "llm", A)
    env.pin(K, A, "stays")  # pins A, does not follow
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()

    assert [o["metadata"]["name"] for o in env.workloads.replaced] == ["llm"]
    rolled = env.workloads.objects[llm.key]
    assert value_of(rolled) == f"reg.example/org/llama:production@{B}"
    record = json.loads(rolled["metadata"]["annotations"]["kitpin.dev/pinned"])[ENV_POINTER]
    assert record["digest"] == B and record["rolledForwardFrom"] == A
    assert sorted(env.events.reasons()) == [
        ("llm", "Normal", "RolledForward"),
        ("llm", "Normal", "TagMoved"),
        ("stays", "Normal", "TagMoved"),
    ]
    message = next(m for _, _, r, m in env.events.emitted if r == "RolledForward")
    assert A in message and B in message
    use = env.status().use(B)
    assert use is not None and [w.name for w in use.workloads] == ["llm"]  # recorded at B
    assert env.metrics.roll_forwards == {"rolled": 1}
    await env.watch.cycle()  # nothing more to do
    assert len(env.workloads.replaced) == 1


async def test_a_move_first_seen_by_an_admission_still_rolls_followers() -> None:
    """Level-triggered: the record already says B (an admission resolved it); the watch
    finds the follower still on A and rolls it, without a TagMoved (nothing moved now)."""
    env = Env()
    follower(env, "llm", A)
    env.pin(K, B, "new", seconds=60)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    assert env.events.reasons() == [("llm", "Normal", "RolledForward")]
    assert value_of(env.workloads.replaced[0]).endswith(B)


async def test_workloads_that_do_not_follow_are_read_again_only_now_and_then() -> None:
    env = Env()
    env.pin(K, A, "stays")
    env.pin(K, B, "new", seconds=60)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    await env.watch.cycle()
    assert env.workloads.reads.count(deployment("stays").key) == 1
    # annotated later: noticed once FOLLOW_RECHECK has passed
    obj = env.workloads.objects[deployment("stays").key]
    obj["metadata"]["annotations"]["kitpin.dev/follow"] = "true"
    env.clock.advance(watch.FOLLOW_RECHECK)
    await env.watch.cycle()
    assert [o["metadata"]["name"] for o in env.workloads.replaced] == ["stays"]


async def test_a_roll_forward_refused_by_admission_is_reported_once() -> None:
    env = Env()
    llm = follower(env, "llm", A)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    env.workloads.refuse = kubeapi.ForbiddenError(
        "PUT",
        "/apis/apps/v1/namespaces/ml/deployments/llm",
        403,
        "Forbidden",
        'admission webhook "check-deployments.kitpin.dev" denied the request: not a ModelKit',
    )
    await env.watch.cycle()
    assert env.workloads.replaced == []
    assert value_of(env.workloads.objects[llm.key]).endswith(A)
    denied = [e for e in env.events.emitted if e[2] == "RollForwardDenied"]
    assert len(denied) == 1 and denied[0][1] == "Warning"
    assert "not a ModelKit" in denied[0][3] and A in denied[0][3] and B in denied[0][3]
    assert env.metrics.roll_forwards == {"denied": 1}
    await env.watch.cycle()  # not tried again for the same digest
    assert env.workloads.replaced == [] and len(env.events.emitted) == 2


async def test_a_roll_forward_refused_otherwise_is_a_failure() -> None:
    env = Env()
    follower(env, "llm", A)
    env.pin(K, B, "new", seconds=60)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    env.workloads.refuse = kubeapi.ForbiddenError(
        "PUT", "/x", 403, "Forbidden", 'cannot update resource "deployments"'
    )
    await env.watch.cycle()
    assert env.events.reasons() == [("llm", "Warning", "RollForwardFailed")]
    assert env.metrics.roll_forwards == {"failed": 1}


async def test_a_conflict_is_tried_again_on_the_next_pass() -> None:
    env = Env()
    follower(env, "llm", A)
    env.pin(K, B, "new", seconds=60)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    env.workloads.refuse = kubeapi.ConflictError("PUT", "/x", 409, "Conflict", "changed")
    await env.watch.cycle()
    assert env.workloads.replaced == [] and env.events.emitted == []
    await env.watch.cycle()
    assert len(env.workloads.replaced) == 1


async def test_a_tag_under_tags_immutable_is_never_rolled() -> None:
    env = Env()
    env.immutable.add(K)
    follower(env, "llm", A)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    await env.watch.cycle()
    assert env.workloads.replaced == []
    assert env.events.reasons() == [("llm", "Warning", "ImmutableTagMoved")]


async def test_pods_are_told_but_not_rolled() -> None:
    env = Env()
    pod = model.Workload(api_version="v1", kind="Pod", namespace="ml", name="bare")
    env.book.seed(K, model.Resolved(digest=A, at=at(0), seen_by="admission", workload=pod))
    env.workloads.add(pod, A, follows=True)
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    assert env.workloads.replaced == []
    assert env.events.reasons() == [("bare", "Normal", "TagMoved")]


async def test_a_workload_found_on_the_current_digest_is_recorded_there() -> None:
    """Rolled forward by a replica that lost the Lease before its record was written: the
    next leader finds the workload already on B and records it there."""
    env = Env()
    llm = follower(env, "llm", A)
    env.pin(K, B, "new", seconds=60)
    env.workloads.add(llm, B, follows=True)  # already rolled
    env.registry.tags[TAG] = B
    env.registry.digests.add(f"reg.example/org/llama@{A}")
    await env.watch.cycle()
    assert env.workloads.replaced == []
    use = env.status().use(B)
    assert use is not None and "llm" in [w.name for w in use.workloads]
