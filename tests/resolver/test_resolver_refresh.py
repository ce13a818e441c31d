"""Refresh-ahead: a hit late in an entry's TTL answers from the cache and refreshes it in the
background, so references in use never make a review wait for the registry."""

from __future__ import annotations

import asyncio

import pytest
from resolver_fakes import (
    CRED_A,
    CRED_B,
    FakeClock,
    FakeSource,
    MakeResolver,
    make_ref,
    not_found,
    unreachable,
    wait,
)

from controller import errors
from controller.metrics import Metrics
from controller.resolver import ResolverSettings


async def settle() -> None:
    """Wait for every background fetch the resolver started (its tasks are named)."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("kitpin-resolve")]
    await asyncio.gather(*tasks, return_exceptions=True)


def refreshes(metrics: Metrics) -> float:
    return metrics.value("kitpin_resolver_refreshes_total")


async def test_no_refresh_before_the_refresh_point(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0, refresh_ahead=0.8)
    ref = make_ref()
    await resolver.resolve(ref)

    clock.advance(47.9)
    assert (await resolver.resolve(ref)).source == "cache"
    await settle()

    assert len(source.calls) == 1
    assert refreshes(metrics) == 0


async def test_late_hit_answers_from_cache_and_refreshes_in_background(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0, refresh_ahead=0.8)
    ref = make_ref()
    before = (await resolver.resolve(ref)).digest
    source.retag(ref)

    clock.advance(48.0)
    late = await resolver.resolve(ref)
    assert late.source == "cache" and late.digest == before  # still within its TTL
    await settle()
    assert len(source.calls) == 2
    assert refreshes(metrics) == 1

    # The refreshed entry: the re-tag is served, and the old expiry no longer matters.
    clock.advance(12.0)  # 60 s after the first resolution
    after = await resolver.resolve(ref)
    assert after.source == "cache"
    assert after.digest == source.digest_of(ref) != before
    assert len(source.calls) == 2


async def test_many_late_hits_start_one_refresh(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    source.gate = asyncio.Event()
    source.started.clear()

    clock.advance(50.0)
    answers = await asyncio.gather(*(resolver.resolve(ref) for _ in range(20)))
    assert {a.source for a in answers} == {"cache"}
    await wait(source.started)
    assert len(source.calls) == 2
    source.gate.set()
    await settle()
    assert refreshes(metrics) == 1


async def test_peek_refreshes_too(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    source.retag(ref)

    clock.advance(55.0)
    hit = resolver.peek(ref)
    assert hit is not None and hit.source == "cache"
    await settle()
    refreshed = resolver.peek(ref)
    assert refreshed is not None and refreshed.digest == source.digest_of(ref)


async def test_refresh_uses_the_callers_credential_and_key(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref, credential=CRED_A)
    await resolver.resolve(ref, credential=CRED_B)

    clock.advance(50.0)
    await resolver.resolve(ref, credential=CRED_B)
    await settle()

    assert [c.identity for c in source.calls] == [
        CRED_A.identity,
        CRED_B.identity,
        CRED_B.identity,
    ]


async def test_refresh_that_cannot_reach_the_registry_keeps_the_entry(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    before = (await resolver.resolve(ref)).digest
    source.fail = unreachable(ref)

    clock.advance(50.0)
    await resolver.resolve(ref)
    await settle()

    clock.advance(9.0)  # still within the original TTL
    kept = await resolver.resolve(ref)
    assert kept.source == "cache" and kept.digest == before


async def test_refresh_that_finds_the_tag_gone_replaces_the_entry(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    source.fail = not_found(ref)

    clock.advance(50.0)
    await resolver.resolve(ref)
    await settle()

    with pytest.raises(errors.NotFoundError):
        await resolver.resolve(ref)


async def test_refresh_ahead_one_turns_it_off(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0, refresh_ahead=1.0)
    ref = make_ref()
    await resolver.resolve(ref)

    clock.advance(59.0)
    await resolver.resolve(ref)
    await settle()

    assert len(source.calls) == 1
    assert refreshes(metrics) == 0


def test_peek_outside_an_event_loop_does_not_refresh(
    source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    from controller.resolver import Resolver

    resolver = Resolver(source, settings=ResolverSettings(ttl=60.0), metrics=metrics, clock=clock)
    ref = make_ref()
    asyncio.run(resolver.resolve(ref))
    clock.advance(50.0)
    assert resolver.peek(ref) is not None
    assert refreshes(metrics) == 0


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_refresh_ahead_outside_zero_one_is_a_config_error(value: float) -> None:
    with pytest.raises(errors.ConfigError, match="refresh_ahead"):
        ResolverSettings(refresh_ahead=value)
