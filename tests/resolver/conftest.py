"""Fixtures for the resolver tests (the fakes live in ``resolver_fakes``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from resolver_fakes import FakeClock, FakeSource, MakeResolver

from controller.metrics import Metrics
from controller.resolver import Resolver, ResolverSettings


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def make_resolver(
    source: FakeSource, clock: FakeClock, metrics: Metrics
) -> AsyncIterator[MakeResolver]:
    """``make_resolver(**settings)``: a Resolver over the fake source, closed after the test."""
    made: list[Resolver] = []

    def make(**settings: Any) -> Resolver:
        resolver = Resolver(
            source,
            settings=ResolverSettings(**settings),
            metrics=metrics,
            clock=clock,
        )
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.aclose()
