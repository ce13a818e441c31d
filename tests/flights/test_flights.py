"""controller.flights: one task in flight per key, shared by every caller that comes meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from controller.flights import Flights
from controller.resolver import ConfigCache
from controller.types import Manifest


class Work:
    """A job the test releases by hand; counts how often it was started."""

    def __init__(self, result: Any = "done", error: Exception | None = None) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self.result = result
        self.error = error

    async def __call__(self) -> Any:
        self.started += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def until(check: Any, guard: float = 5.0) -> None:
    async with asyncio.timeout(guard):
        while not check():
            await asyncio.sleep(0)


async def test_concurrent_callers_share_one_task_and_its_result() -> None:
    flights: Flights[str, str] = Flights()
    work = Work()
    callers = [asyncio.create_task(flights.result("k", work)) for _ in range(10)]
    await until(lambda: work.started == 1)
    assert flights.in_flight("k") and len(flights) == 1
    work.gate.set()
    assert await asyncio.gather(*callers) == ["done"] * 10
    assert work.started == 1
    await until(lambda: len(flights) == 0)


async def test_other_keys_do_not_share() -> None:
    flights: Flights[str, str] = Flights()
    a, b = Work("a"), Work("b")
    ta = asyncio.create_task(flights.result("a", a))
    tb = asyncio.create_task(flights.result("b", b))
    a.gate.set()
    b.gate.set()
    assert (await ta, await tb) == ("a", "b")


async def test_an_error_reaches_every_caller_and_the_next_call_starts_again() -> None:
    flights: Flights[str, str] = Flights()
    work = Work(error=RuntimeError("boom"))
    callers = [asyncio.create_task(flights.result("k", work)) for _ in range(3)]
    await until(lambda: work.started == 1)
    work.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [str(r) for r in results] == ["boom"] * 3

    work.error = None
    assert await flights.result("k", work) == "done"
    assert work.started == 2


async def test_a_caller_that_gives_up_leaves_the_task_to_the_others() -> None:
    flights: Flights[str, str] = Flights()
    work = Work()
    first = asyncio.create_task(flights.result("k", work))
    second = asyncio.create_task(flights.result("k", work))
    await until(lambda: work.started == 1)
    first.cancel()
    await asyncio.wait([first])
    assert first.cancelled()
    work.gate.set()
    assert await second == "done"


async def test_cancel_all_ends_the_tasks_and_callers_can_tell() -> None:
    flights: Flights[str, str] = Flights()
    work = Work()
    joined = asyncio.create_task(flights.join("k", work))
    await until(lambda: work.started == 1)
    await flights.cancel_all()
    task = await joined  # the caller itself was not cancelled
    assert task.cancelled()
    assert len(flights) == 0


class SlowConfigs:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0

    async def get_config(self, ref: Any, manifest: Manifest, **_: Any) -> Mapping[str, Any]:
        self.calls += 1
        await self.gate.wait()
        return {"manifestVersion": "1.0"}


async def test_config_cache_first_caller_giving_up_does_not_fail_the_others() -> None:
    configs = SlowConfigs()
    cache = ConfigCache(configs)
    manifest = Manifest(
        digest="sha256:" + "a" * 64,
        media_type="application/vnd.oci.image.manifest.v1+json",
        size=1,
        format="kitops-modelkit",
        config_digest="sha256:" + "b" * 64,
    )
    first = asyncio.create_task(cache.get_config(None, manifest))  # type: ignore[arg-type]
    second = asyncio.create_task(cache.get_config(None, manifest))  # type: ignore[arg-type]
    await until(lambda: configs.calls == 1)
    first.cancel()  # the first review's deadline
    configs.gate.set()
    assert await second == {"manifestVersion": "1.0"}
    assert first.cancelled() or first.done()
    assert await cache.get_config(None, manifest) == {"manifestVersion": "1.0"}  # type: ignore[arg-type]
    assert configs.calls == 1 and len(cache) == 1


@pytest.mark.parametrize("n", [1, 50])
async def test_many_sequential_calls_each_start_their_own_task(n: int) -> None:
    flights: Flights[int, int] = Flights()
    counter = {"started": 0}

    async def job() -> int:
        counter["started"] += 1
        return counter["started"]

    results = [await flights.result(0, job) for _ in range(n)]
    assert results == list(range(1, n + 1))
