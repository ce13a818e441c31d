"""Resolver.peek: the synchronous cache-hit path the engine tries before resolve()."""

from __future__ import annotations

import pytest
from resolver_fakes import CRED_A, FakeClock, FakeSource, MakeResolver, make_ref, not_found

from controller import errors


async def test_peek_answers_fresh_hits_only_and_counts_like_resolve(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref(tag="production")
    assert resolver.peek(ref) is None  # nothing cached: no count, no fetch
    assert resolver.metrics.value("kitpin_resolver_requests_total") == 0
    first = await resolver.resolve(ref)

    hit = resolver.peek(ref)
    assert hit is not None and hit.digest == first.digest and hit.source == "cache"
    assert resolver.metrics.value("kitpin_resolver_cache_hits_total") == 1
    assert resolver.peek(ref, credential=CRED_A) is None  # another credential proves its own
    clock.advance(61.0)
    assert resolver.peek(ref) is None  # expired: resolve() refreshes (or serves stale)
    assert len(source.calls) == 1


async def test_peek_leaves_negative_entries_and_a_disabled_cache_to_resolve(
    make_resolver: MakeResolver, source: FakeSource
) -> None:
    resolver = make_resolver()
    gone = make_ref(tag="gone")
    source.fail = not_found(gone)
    with pytest.raises(errors.NotFoundError):
        await resolver.resolve(gone)
    assert resolver.peek(gone) is None
    source.fail = None
    off = make_resolver(enabled=False)
    await off.resolve(make_ref())
    assert off.peek(make_ref()) is None
