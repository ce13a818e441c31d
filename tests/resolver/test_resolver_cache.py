"""The resolver's cache: TTLs, negative caching, credential isolation, LRU bound, digests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from resolver_fakes import (
    CRED_A,
    CRED_B,
    FakeClock,
    FakeSource,
    MakeResolver,
    fake_digest,
    make_ref,
    not_found,
)

from controller import errors
from controller.resolver import Resolver, ResolverSettings
from controller.types import ANONYMOUS


async def test_first_call_fetches_then_hits(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()

    first = await resolver.resolve(ref)
    second = await resolver.resolve(ref)

    assert first.source == "registry"
    assert second.source == "cache"
    assert first.digest == second.digest == source.digest_of(ref)
    assert first.digest.startswith("sha256:") and len(first.digest) == 71
    assert not first.stale and not second.stale
    assert second.resolved_at == first.resolved_at
    assert len(source.calls) == 1


async def test_resolved_at_is_utc_time_of_registry_answer(source: FakeSource) -> None:
    answered = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    resolver = Resolver(source, wall_clock=lambda: answered)

    res = await resolver.resolve(make_ref())

    assert res.resolved_at == answered


async def test_retag_is_seen_only_after_ttl(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0, refresh_ahead=1.0)  # no refresh-ahead: the bare TTL
    ref = make_ref()
    before = (await resolver.resolve(ref)).digest

    source.retag(ref)
    clock.advance(59.9)
    assert (await resolver.resolve(ref)).digest == before

    clock.advance(0.1)
    after = await resolver.resolve(ref)
    assert after.digest != before
    assert after.digest == source.digest_of(ref)
    assert after.source == "registry"
    assert len(source.calls) == 2


async def test_hit_carries_the_callers_own_reference(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    long_form = make_ref(name="registry.example.com/org/model")
    other_spelling = make_ref(name="REGISTRY.example.com/org/model")

    await resolver.resolve(long_form)
    res = await resolver.resolve(other_spelling)

    assert res.source == "cache"
    assert res.reference is other_spelling
    assert len(source.calls) == 1


async def test_not_found_is_cached_for_negative_ttl(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(negative_ttl=5.0)
    ref = make_ref(tag="typo")
    source.fail = not_found(ref)

    with pytest.raises(errors.NotFoundError) as first:
        await resolver.resolve(ref)
    source.fail = None  # the tag gets pushed meanwhile
    clock.advance(4.9)
    with pytest.raises(errors.NotFoundError) as second:
        await resolver.resolve(ref)
    assert str(second.value) == str(first.value)
    assert len(source.calls) == 1

    clock.advance(0.1)
    assert (await resolver.resolve(ref)).source == "registry"
    assert len(source.calls) == 2


async def test_negative_ttl_zero_disables_negative_cache(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver(negative_ttl=0.0)
    ref = make_ref(tag="typo")
    source.fail = not_found(ref)

    for _ in range(2):
        with pytest.raises(errors.NotFoundError):
            await resolver.resolve(ref)
    assert len(source.calls) == 2
    assert resolver.cache_size() == 0


@pytest.mark.parametrize(
    "error",
    [
        errors.UnauthorizedError("401"),
        errors.ForbiddenError("403"),
        errors.RateLimitedError("429", retry_after=30.0),
        errors.UnreachableError("refused"),
        errors.RegistryTimeoutError("slow"),
        errors.RegistryError("503"),
        errors.BadResponseError("not a manifest"),
    ],
    ids=lambda e: e.reason,
)
async def test_other_errors_are_never_cached(
    make_resolver: MakeResolver, source: FakeSource, error: errors.RegistryError
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.fail = error

    with pytest.raises(type(error)):
        await resolver.resolve(ref)
    source.fail = None
    assert (await resolver.resolve(ref)).source == "registry"
    assert len(source.calls) == 2


async def test_digest_cached_for_one_credential_is_not_served_to_others(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.allowed = {CRED_A.identity}  # a private repository only team A can read

    assert (await resolver.resolve(ref, credential=CRED_A)).source == "registry"
    assert (await resolver.resolve(ref, credential=CRED_A)).source == "cache"
    with pytest.raises(errors.UnauthorizedError):
        await resolver.resolve(ref)
    with pytest.raises(errors.UnauthorizedError):
        await resolver.resolve(ref, credential=CRED_B)

    assert [c.identity for c in source.calls] == [CRED_A.identity, None, CRED_B.identity]


async def test_credentials_never_coalesce_with_each_other(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref()
    source.gate = asyncio.Event()

    tasks = [
        asyncio.create_task(resolver.resolve(ref, credential=cred))
        for cred in (CRED_A, CRED_B, None, CRED_A)
    ]
    source.gate.set()
    results = await asyncio.gather(*tasks)

    assert [r.source for r in results] == ["registry", "registry", "registry", "coalesced"]
    assert sorted(str(c.identity) for c in source.calls) == sorted(
        [CRED_A.identity, CRED_B.identity, "None"]
    )
    assert resolver.cache_size() == 6  # per credential: the tag entry and its digest entry


def test_anonymous_key_is_not_a_possible_identity() -> None:
    assert len(ANONYMOUS) != len(CRED_A.identity)


async def test_lru_bound(make_resolver: MakeResolver, source: FakeSource) -> None:
    # Each tag resolution stores two entries (the tag, then the digest it pinned to), so
    # six entries hold three references.
    resolver = make_resolver(max_entries=6)
    r = [make_ref(tag=f"v{i}") for i in range(5)]

    for ref in r[:3]:
        await resolver.resolve(ref)
    await resolver.resolve(r[0])  # r[0] is now the most recently used; r[1] the least
    await resolver.resolve(r[3])
    assert resolver.cache_size() == 6
    calls = len(source.calls)

    assert (await resolver.resolve(r[0])).source == "cache"
    assert (await resolver.resolve(r[1])).source == "registry"  # was evicted
    assert len(source.calls) == calls + 1

    for ref in r:
        await resolver.resolve(ref)
    assert resolver.cache_size() == 6


async def test_lru_bound_counts_negative_entries(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver(max_entries=2)
    source.fail = not_found(make_ref())
    for i in range(4):
        with pytest.raises(errors.NotFoundError):
            await resolver.resolve(make_ref(tag=f"gone{i}"))
    assert resolver.cache_size() == 2


async def test_digest_reference_is_fetched_by_digest_and_kept_longer(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0, digest_ttl=600.0, refresh_ahead=1.0)
    digest = fake_digest("pinned")
    ref = make_ref(digest=digest)

    res = await resolver.resolve(ref)
    assert res.digest == digest
    assert source.calls[0].canonical == f"registry.example.com/org/model@{digest}"

    clock.advance(599.0)
    assert (await resolver.resolve(ref)).source == "cache"
    clock.advance(1.0)
    assert (await resolver.resolve(ref)).source == "registry"


async def test_digest_reference_answered_with_other_bytes_is_a_mismatch(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    ref = make_ref(digest=fake_digest("pinned"))
    source.wrong_digest = True

    with pytest.raises(errors.DigestMismatchError, match="wrong content"):
        await resolver.resolve(ref)
    assert resolver.cache_size() == 0


async def test_invalidate(make_resolver: MakeResolver, source: FakeSource) -> None:
    resolver = make_resolver()
    a, b = make_ref(tag="a"), make_ref(tag="b")
    await resolver.resolve(a)
    await resolver.resolve(a, credential=CRED_A)
    await resolver.resolve(b)

    assert resolver.invalidate(a) == 2  # the tag entries; digest entries stay valid
    assert resolver.cache_size() == 4
    assert (await resolver.resolve(a)).source == "registry"
    assert (await resolver.resolve(b)).source == "cache"

    assert resolver.invalidate() == 5  # a's tag entry came back; its digest entry was reused
    assert resolver.cache_size() == 0


async def test_disabled_cache_fetches_every_time_and_never_coalesces(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver(enabled=False)
    ref = make_ref()
    source.gate = asyncio.Event()

    tasks = [asyncio.create_task(resolver.resolve(ref)) for _ in range(5)]
    source.gate.set()
    results = await asyncio.gather(*tasks)
    results.append(await resolver.resolve(ref))

    assert {r.source for r in results} == {"registry"}
    assert len(source.calls) == 6
    assert resolver.cache_size() == 0


async def test_disabled_cache_still_applies_the_deadline(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver(enabled=False)
    source.gate = asyncio.Event()  # never set: the registry hangs

    with pytest.raises(errors.RegistryTimeoutError, match=r"0\.05 s"):
        await resolver.resolve(make_ref(), deadline=0.05)


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": -1.0},
        {"negative_ttl": -1.0},
        {"stale_if_error": -0.1},
        {"digest_ttl": -5.0},
        {"deadline": 0.0},
        {"max_entries": 0},
    ],
)
def test_invalid_settings_are_config_errors(settings: dict[str, float]) -> None:
    with pytest.raises(errors.ConfigError):
        ResolverSettings(**settings)  # type: ignore[arg-type]


async def test_tag_resolution_seeds_the_digest_entry_for_the_same_credential(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    """The validating webhook and child Pods ask for the pinned form next: a cache hit."""
    resolver = make_resolver()
    ref = make_ref(tag="production")
    first = await resolver.resolve(ref, credential=CRED_A)
    calls = len(source.calls)

    pinned = ref.with_digest(first.digest)
    again = await resolver.resolve(pinned, credential=CRED_A)
    assert again.source == "cache" and again.digest == first.digest
    assert len(source.calls) == calls

    # Another credential (or none) must prove its own access: no hit.
    assert (await resolver.resolve(pinned)).source == "registry"
    assert len(source.calls) == calls + 1
