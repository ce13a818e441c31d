"""Stale-if-error: which failures may serve the last verified digest, and for how long."""

from __future__ import annotations

import asyncio

import pytest
from resolver_fakes import (
    CRED_A,
    FakeClock,
    FakeSource,
    MakeResolver,
    make_ref,
    unreachable,
    wait,
)

from controller import errors
from controller.metrics import Metrics
from controller.resolver import may_serve_stale

RETRIABLE = [
    errors.UnreachableError("connection refused"),
    errors.RegistryTimeoutError("registry timed out"),
    errors.RateLimitedError("429 too many requests", retry_after=60.0),
    errors.RegistryError("503 service unavailable"),
]
ANSWERS = [
    errors.NotFoundError("tag deleted"),
    errors.UnauthorizedError("401"),
    errors.ForbiddenError("403"),
    errors.DigestMismatchError("bytes do not match"),
    errors.BadResponseError("not a manifest"),
    errors.ManifestTooLargeError("8 MiB"),
    errors.HostNotAllowedError("redirect to evil.example"),
]


def _id(err: errors.RegistryError) -> str:
    return err.reason


@pytest.mark.parametrize("error", RETRIABLE, ids=_id)
async def test_retriable_failure_of_expired_entry_serves_stale(
    make_resolver: MakeResolver,
    source: FakeSource,
    clock: FakeClock,
    metrics: Metrics,
    error: errors.RegistryError,
) -> None:
    resolver = make_resolver(ttl=60.0, stale_if_error=300.0)
    ref = make_ref()
    fresh = await resolver.resolve(ref)

    clock.advance(61.0)
    source.fail = error
    res = await resolver.resolve(ref)

    assert res.stale is True
    assert res.source == "stale"
    assert res.stale_reason == str(error)
    assert res.digest == fresh.digest
    assert res.resolved_at == fresh.resolved_at
    assert res.reference is ref
    assert metrics.value("kitpin_resolver_stale_served_total") == 1
    assert metrics.value("kitpin_resolver_errors_total", {"reason": error.reason}) == 0


async def test_stale_window_ends_at_ttl_plus_stale_if_error(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0, stale_if_error=300.0)
    ref = make_ref()
    await resolver.resolve(ref)
    source.fail = unreachable(ref)

    clock.advance(359.0)
    assert (await resolver.resolve(ref)).stale

    clock.advance(1.0)
    with pytest.raises(errors.UnreachableError):
        await resolver.resolve(ref)
    # The tag entry is too old to ever serve: dropped. The digest entry it seeded stays
    # (content at a digest cannot change; digest_ttl bounds it separately).
    assert resolver.cache_size() == 1


async def test_recovery_replaces_the_stale_entry(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    clock.advance(61.0)
    source.fail = unreachable(ref)
    assert (await resolver.resolve(ref)).stale

    source.fail = None
    source.retag(ref)
    res = await resolver.resolve(ref)
    assert not res.stale and res.source == "registry"
    assert res.digest == source.digest_of(ref)


async def test_missed_deadline_serves_stale(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    fresh = await resolver.resolve(ref)
    clock.advance(61.0)
    source.gate = asyncio.Event()  # the registry hangs now

    res = await resolver.resolve(ref, deadline=0.05)

    assert res.stale and res.digest == fresh.digest
    assert res.stale_reason is not None and "0.05 s resolution deadline" in res.stale_reason


async def test_coalesced_callers_all_get_stale(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    clock.advance(61.0)
    source.started.clear()
    source.gate = asyncio.Event()
    source.fail = unreachable(ref)

    tasks = [asyncio.create_task(resolver.resolve(ref)) for _ in range(5)]
    await wait(source.started)
    source.gate.set()
    results = await asyncio.gather(*tasks)

    assert all(r.stale for r in results)
    assert len(source.calls) == 2
    assert metrics.value("kitpin_resolver_stale_served_total") == 5


@pytest.mark.parametrize("error", ANSWERS, ids=_id)
async def test_answers_are_never_served_stale_and_drop_the_entry(
    make_resolver: MakeResolver,
    source: FakeSource,
    clock: FakeClock,
    error: errors.RegistryError,
) -> None:
    resolver = make_resolver(ttl=60.0, stale_if_error=300.0)
    ref = make_ref()
    await resolver.resolve(ref)
    clock.advance(61.0)

    source.fail = error
    with pytest.raises(type(error)):
        await resolver.resolve(ref)

    # Even an outage later (still inside the stale window, past any negative TTL) cannot
    # bring the overridden digest back.
    clock.advance(10.0)
    source.fail = unreachable(ref)
    with pytest.raises(errors.UnreachableError):
        await resolver.resolve(ref)


async def test_stale_is_per_credential(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref, credential=CRED_A)
    clock.advance(61.0)
    source.fail = unreachable(ref)

    assert (await resolver.resolve(ref, credential=CRED_A)).stale
    with pytest.raises(errors.UnreachableError):
        await resolver.resolve(ref)


async def test_stale_if_error_zero_disables_stale(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0, stale_if_error=0.0)
    ref = make_ref()
    await resolver.resolve(ref)
    clock.advance(60.0)
    source.fail = unreachable(ref)

    with pytest.raises(errors.UnreachableError):
        await resolver.resolve(ref)


async def test_unexpected_failure_may_serve_stale(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()
    await resolver.resolve(ref)
    clock.advance(61.0)
    source.fail = ValueError("client bug")

    res = await resolver.resolve(ref)
    assert res.stale and res.stale_reason is not None and "ValueError" in res.stale_reason


def test_classification() -> None:
    assert all(may_serve_stale(e) for e in RETRIABLE)
    assert not any(may_serve_stale(e) for e in ANSWERS)
