"""Metrics: the resolver's counters move as documented; exposition and label hygiene."""

from __future__ import annotations

import asyncio

import pytest
from resolver_fakes import FakeClock, FakeSource, MakeResolver, make_ref, not_found, unreachable

from controller import errors
from controller.metrics import CONTENT_TYPE, Metrics


def _counts(metrics: Metrics) -> dict[str, float]:
    names = ["requests", "cache_hits", "cache_misses", "coalesced", "stale_served"]
    return {n: metrics.value(f"kitpin_resolver_{n}_total") for n in names}


async def test_counters_follow_a_story(
    make_resolver: MakeResolver, source: FakeSource, clock: FakeClock, metrics: Metrics
) -> None:
    resolver = make_resolver(ttl=60.0)
    ref = make_ref()

    await resolver.resolve(ref)  # miss
    await resolver.resolve(ref)  # hit
    source.gate = asyncio.Event()
    clock.advance(61.0)
    tasks = [asyncio.create_task(resolver.resolve(ref)) for _ in range(3)]  # miss + 2 coalesced
    source.gate.set()
    await asyncio.gather(*tasks)
    clock.advance(61.0)
    source.fail = unreachable(ref)
    assert (await resolver.resolve(ref)).stale  # miss, stale
    missing = make_ref(tag="typo")
    source.fail = not_found(missing)
    for _ in range(2):  # miss, then negative hit
        with pytest.raises(errors.NotFoundError):
            await resolver.resolve(missing)

    assert _counts(metrics) == {
        "requests": 8,
        "cache_hits": 2,
        "cache_misses": 4,
        "coalesced": 2,
        "stale_served": 1,
    }
    counts = _counts(metrics)
    assert counts["requests"] == counts["cache_hits"] + counts["cache_misses"] + counts["coalesced"]
    assert metrics.value("kitpin_resolver_errors_total", {"reason": "NotFound"}) == 2
    assert metrics.value("kitpin_resolver_errors_total", {"reason": "Unreachable"}) == 0
    assert metrics.value("kitpin_resolver_fetch_seconds_count") == 4


async def test_each_resolver_can_have_its_own_registry(source: FakeSource) -> None:
    from controller.resolver import Resolver

    one, two = Metrics(), Metrics()
    await Resolver(source, metrics=one).resolve(make_ref())
    assert one.value("kitpin_resolver_requests_total") == 1
    assert two.value("kitpin_resolver_requests_total") == 0
    assert Resolver(source).metrics is not one  # a private Metrics when none is given


def test_render_exposes_every_metric() -> None:
    metrics = Metrics()
    metrics.count_registry_request("registry.example.com", "manifest")
    metrics.count_registry_request("registry.example.com", "token")
    metrics.admission_reviews.labels(webhook="pin", outcome="allowed").inc()
    metrics.admission_duration_seconds.labels(webhook="pin").observe(0.02)

    text = metrics.render().decode()

    for name in [
        "kitpin_resolver_requests_total",
        "kitpin_resolver_cache_hits_total",
        "kitpin_resolver_cache_misses_total",
        "kitpin_resolver_coalesced_total",
        "kitpin_resolver_stale_served_total",
        'kitpin_resolver_errors_total{reason="NotFound"} 0.0',
        "kitpin_resolver_fetch_seconds_bucket",
        'kitpin_registry_requests_total{kind="manifest",registry="registry.example.com"} 1.0',
        'kitpin_admission_reviews_total{outcome="allowed",webhook="pin"} 1.0',
        'kitpin_admission_duration_seconds_count{webhook="pin"} 1.0',
    ]:
        assert name in text, name
    assert CONTENT_TYPE.startswith("text/plain")
    assert metrics.value("kitpin_registry_requests_total", {"registry": "x", "kind": "blob"}) == 0


async def test_no_reference_or_identity_ever_becomes_a_label(
    make_resolver: MakeResolver, source: FakeSource, metrics: Metrics
) -> None:
    from resolver_fakes import CRED_A

    resolver = make_resolver()
    for i in range(20):
        await resolver.resolve(make_ref(tag=f"v{i}"), credential=CRED_A)
    source.fail = not_found(make_ref())
    with pytest.raises(errors.NotFoundError):
        await resolver.resolve(make_ref(tag="gone"), credential=CRED_A)

    text = metrics.render().decode()
    assert "org/model" not in text
    assert CRED_A.identity not in text
    assert "sha256:" not in text
