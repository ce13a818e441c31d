"""Single-flight: concurrent callers share one fetch; cancellation, failures and deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest
from resolver_fakes import FakeSource, MakeResolver, make_ref, unreachable, wait

from controller import errors
from controller.metrics import Metrics


async def test_200_concurrent_callers_make_one_registry_call(
    make_resolver: MakeResolver, source: FakeSource, metrics: Metrics
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()

    tasks = [asyncio.create_task(resolver.resolve(ref)) for _ in range(200)]
    await wait(source.started)  # the fetch started, so every caller has joined it
    source.gate.set()
    results = await asyncio.gather(*tasks)

    assert len(source.calls) == 1
    assert {r.digest for r in results} == {source.digest_of(ref)}
    assert [r.source for r in results].count("registry") == 1
    assert [r.source for r in results].count("coalesced") == 199
    assert metrics.value("kitpin_resolver_coalesced_total") == 199
    assert metrics.value("kitpin_resolver_cache_misses_total") == 1
    assert (await resolver.resolve(ref)).source == "cache"


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()

    starter = asyncio.create_task(resolver.resolve(ref))  # this one created the fetch
    others = [asyncio.create_task(resolver.resolve(ref)) for _ in range(3)]
    await wait(source.started)

    starter.cancel()
    others[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    with pytest.raises(asyncio.CancelledError):
        await others[0]
    assert not source.cancelled.is_set()

    source.gate.set()
    results = await asyncio.gather(*others[1:])
    assert {r.digest for r in results} == {source.digest_of(ref)}
    assert len(source.calls) == 1


async def test_fetch_completes_and_is_cached_when_every_caller_left(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()

    callers = [asyncio.create_task(resolver.resolve(ref)) for _ in range(2)]
    await wait(source.started)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)

    source.gate.set()
    await wait(source.finished)  # the fetch writes the cache in the same step it returns

    assert (await resolver.resolve(ref)).source == "cache"
    assert len(source.calls) == 1


async def test_fetch_failure_reaches_every_caller_and_the_next_call_retries(
    make_resolver: MakeResolver, source: FakeSource, metrics: Metrics
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()
    source.fail = unreachable(ref)

    tasks = [asyncio.create_task(resolver.resolve(ref)) for _ in range(10)]
    await wait(source.started)
    source.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(o, errors.UnreachableError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1  # the one error of the one fetch
    assert metrics.value("kitpin_resolver_errors_total", {"reason": "Unreachable"}) == 10

    source.fail = None
    assert (await resolver.resolve(ref)).source == "registry"
    assert len(source.calls) == 2


async def test_hanging_registry_gives_a_timeout_within_the_deadline(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()  # never set

    started = time.monotonic()
    with pytest.raises(errors.RegistryTimeoutError) as caught:
        await resolver.resolve(ref, deadline=0.05)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert "0.05 s" in str(caught.value)
    assert ref.canonical in str(caught.value)
    assert caught.value.registry == ref.registry
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_each_caller_has_its_own_deadline(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()

    patient = asyncio.create_task(resolver.resolve(ref, deadline=5.0))
    with pytest.raises(errors.RegistryTimeoutError):
        await resolver.resolve(ref, deadline=0.02)
    assert not patient.done()

    source.gate.set()
    assert (await patient).digest == source.digest_of(ref)
    assert len(source.calls) == 1


async def test_settings_deadline_bounds_the_shared_fetch_so_a_hung_slot_frees(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver(deadline=0.1)
    ref = make_ref()
    source.gate = asyncio.Event()  # the first call hangs

    with pytest.raises(errors.RegistryTimeoutError, match=r"0\.1 s"):
        await resolver.resolve(ref, deadline=30.0)  # longer than the fetch may run
    await wait(source.cancelled)  # the fetch was abandoned by its own bound

    source.gate.set()
    assert (await resolver.resolve(ref)).source == "registry"
    assert len(source.calls) == 2


async def test_aclose_fails_waiting_callers_with_a_registry_error(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    source.gate = asyncio.Event()
    waiting = asyncio.create_task(resolver.resolve(make_ref()))
    await wait(source.started)

    await resolver.aclose()

    with pytest.raises(errors.RegistryError, match="shutting down"):
        await waiting
    assert source.cancelled.is_set()


async def test_unexpected_exception_is_wrapped_and_logged(
    make_resolver: MakeResolver, source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.fail = KeyError("mediaType")

    with pytest.raises(errors.RegistryError) as caught:
        await resolver.resolve(ref)

    assert type(caught.value) is errors.RegistryError
    assert isinstance(caught.value.__cause__, KeyError)
    assert "KeyError" in str(caught.value) and ref.canonical in str(caught.value)
    logged = [r for r in caplog.records if r.name == "controller.resolver" and r.exc_info]
    assert logged and logged[0].exc_info is not None
    assert logged[0].exc_info[0] is KeyError


async def test_source_raising_builtin_timeout_is_not_mistaken_for_the_deadline(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    source.fail = TimeoutError("socket read timed out")

    with pytest.raises(errors.RegistryError) as caught:
        await resolver.resolve(make_ref())
    assert type(caught.value) is errors.RegistryError
    assert "deadline" not in str(caught.value)
