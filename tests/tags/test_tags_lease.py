"""Leader election on a coordination.k8s.io/v1 Lease through a (fake) apiserver over real TLS,
with clocks the tests step: acquire by create, renew, no takeover while the holder renews,
takeover after the duration (judged on the follower's own clock), release on shutdown,
optimistic concurrency, and run(): the work runs only while the Lease is held."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import kopf
import pytest

from controller import kubeapi
from controller.tags import lease
from controller.tags.lease import LeaseElector
from tests.tags.fakeapi import TagsApiServer
from tests.tags.tagfakes import FakeClock, api

NS = "kitpin"
PATH = "/apis/coordination.k8s.io/v1/namespaces/kitpin/leases/kitpin-drift-watch"
MICRO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
async def client(tags_api: TagsApiServer) -> AsyncIterator[kubeapi.KubeAPI[kopf.ConnectionInfo]]:
    async with api(tags_api) as c:
        yield c


def elector(
    client: kubeapi.KubeAPI[kopf.ConnectionInfo], holder: str, clock: FakeClock
) -> LeaseElector:
    return LeaseElector(
        client,
        namespace=NS,
        name="kitpin-drift-watch",
        holder=holder,
        clock=clock,
        now=clock.now,
        sleep=clock.sleep,
    )


def spec(server: TagsApiServer) -> dict[str, object]:
    return dict(server.stored(PATH)["spec"])


def test_identity_and_micro_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "kitpin-7d9f8-abcde")
    one, two = lease.identity(), lease.identity()
    assert one.startswith("kitpin-7d9f8-abcde_") and one != two
    assert re.fullmatch(r"kitpin-7d9f8-abcde_[0-9a-f]{8}", one)
    assert lease.identity("pod").startswith("pod_")
    when = datetime(2026, 1, 2, 3, 4, 5, 120, tzinfo=UTC)
    assert lease.micro_time(when) == "2026-01-02T03:04:05.000120Z"
    assert lease.lease_path(NS, "x") == "/apis/coordination.k8s.io/v1/namespaces/kitpin/leases/x"


def test_the_timings_must_make_sense(client: kubeapi.KubeAPI[kopf.ConnectionInfo]) -> None:
    with pytest.raises(ValueError):
        LeaseElector(client, namespace=NS, name="x", duration=10, renew_deadline=10)


async def test_the_first_replica_creates_and_holds_it(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a = elector(client, "a", clock)
    assert await a.try_acquire_or_renew() and a.leading
    s = spec(tags_api)
    assert s["holderIdentity"] == "a" and s["leaseDurationSeconds"] == 15
    assert s["leaseTransitions"] == 0
    assert MICRO.fullmatch(str(s["renewTime"])) and MICRO.fullmatch(str(s["acquireTime"]))
    created = tags_api.requests("POST")[0]
    assert created.path == "/apis/coordination.k8s.io/v1/namespaces/kitpin/leases"


async def test_renewal_keeps_it_and_others_wait(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a, b = elector(client, "a", clock_a), elector(client, "b", clock_b)
    assert await a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of renewals every 2 s: b never takes over
        clock_a.advance(2)
        clock_b.advance(2)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew() and not b.leading
    s = spec(tags_api)
    assert s["holderIdentity"] == "a" and s["leaseTransitions"] == 0
    patches = tags_api.requests("PATCH")
    assert all((p.body.get("metadata") or {}).get("resourceVersion") for p in patches)
    assert len(patches) == 20  # a's renewals; b never wrote


async def test_takeover_after_the_duration_on_the_followers_clock(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock(t=5_000_000.0)  # unrelated monotonic clocks
    a, b = elector(client, "a", clock_a), elector(client, "b", clock_b)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b sees the Lease now: its clock starts
    clock_b.advance(14.9)
    assert not await b.try_acquire_or_renew()
    clock_b.advance(0.2)  # a has not renewed for 15.1 s of b's clock
    assert await b.try_acquire_or_renew() and b.leading
    s = spec(tags_api)
    assert s["holderIdentity"] == "b" and s["leaseTransitions"] == 1
    # a comes back: the Lease is b's and alive
    clock_a.advance(20)
    assert not a.leading  # no renewal for longer than the renew deadline
    assert not await a.try_acquire_or_renew() and not a.leading


async def test_a_leader_gives_up_before_anyone_may_take_over(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a = elector(client, "a", clock)
    assert await a.try_acquire_or_renew()
    tags_api.forbidden.add(PATH)  # renewals fail from now on
    clock.advance(9)
    assert not await a.try_acquire_or_renew() and a.leading  # within the renew deadline
    clock.advance(1.5)
    assert not a.leading  # 10.5 s without renewal: stop (others may acquire only after 15 s)


async def test_two_followers_racing_for_an_expired_lease_one_wins(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    dead = elector(client, "dead", clock)
    assert await dead.try_acquire_or_renew()
    b, c = elector(client, "b", clock), elector(client, "c", clock)
    assert not await b.try_acquire_or_renew() and not await c.try_acquire_or_renew()
    clock.advance(16)
    results = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    assert spec(tags_api)["holderIdentity"] == ("b" if results[0] else "c")


async def test_two_replicas_creating_at_once_one_wins(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a, b = elector(client, "a", clock), elector(client, "b", clock)
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]


async def test_release_lets_another_take_over_at_once(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a, b = elector(client, "a", clock), elector(client, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release() and not a.leading
    assert "holderIdentity" not in spec(tags_api)
    assert spec(tags_api)["leaseDurationSeconds"] == 1
    assert await b.try_acquire_or_renew()  # no wait for the duration
    assert not await a.release()  # not holding: nothing to release


async def test_run_works_only_while_holding(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a = elector(client, "a", clock)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    running = asyncio.create_task(a.run(work))
    await asyncio.wait_for(started.wait(), 10)
    assert spec(tags_api)["holderIdentity"] == "a"
    # another replica takes the Lease (say a's renewals stalled): a stops its work
    stored = tags_api.objects[PATH]
    stored["spec"]["holderIdentity"] = "b"
    stored["spec"]["renewTime"] = "2026-01-02T03:04:05.000000Z"
    await asyncio.wait_for(stopped.wait(), 10)
    assert not running.done()  # a follows again
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert spec(tags_api)["holderIdentity"] == "b"  # a did not hold it: no release


async def test_shutdown_stops_the_work_and_releases(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo]
) -> None:
    clock = FakeClock()
    a = elector(client, "a", clock)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    running = asyncio.create_task(a.run(work))
    await asyncio.wait_for(started.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert stopped.is_set()
    assert "holderIdentity" not in spec(tags_api)


async def test_work_that_ends_is_started_again_while_leading(
    client: kubeapi.KubeAPI[kopf.ConnectionInfo],
) -> None:
    clock = FakeClock()
    a = elector(client, "a", clock)
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")

    running = asyncio.create_task(a.run(work))
    deadline = time.monotonic() + 10
    while runs < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


@pytest.mark.parametrize("phase", [0.0, 0.5, 1.0, 1.9])
async def test_a_dead_leader_is_replaced_within_30_seconds(
    tags_api: TagsApiServer, client: kubeapi.KubeAPI[kopf.ConnectionInfo], phase: float
) -> None:
    """Both replicas try every 2 s (b offset by ``phase``); a renews until 10 s, then dies
    without releasing. b holds the Lease within duration + 2 retries (19 s) of a's last
    renewal, never before the 15 s duration has passed on its own clock."""
    clock = FakeClock()
    a, b = elector(client, "a", clock), elector(client, "b", clock)
    last_renewal = 10.0
    ticks = sorted(
        [(t, "a") for t in range(0, 11, 2)] + [(t + phase, "b") for t in range(0, 60, 2)]
    )
    for when, who in ticks:
        clock.t = 1000.0 + when
        if who == "a":
            assert await a.try_acquire_or_renew()
        elif await b.try_acquire_or_renew():
            assert 15 <= when - last_renewal <= 19
            return
    raise AssertionError("b never took over")
