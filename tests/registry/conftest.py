"""Fixtures for the registry tests (the fakes live in ``registry_fakes``)."""

from __future__ import annotations

import pytest
from registry_fakes import FakeClock, FakeDNS


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dns() -> FakeDNS:
    return FakeDNS()
