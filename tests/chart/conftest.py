"""Fixtures for the chart tests: they run the pinned helm binary (built by ``hack/tools.sh``
when missing), so they are ``integration`` tests; none needs a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from harness import chart as render


@pytest.fixture(scope="session")
def default_docs() -> list[dict[str, Any]]:
    """The chart rendered with its default values (generated certificate)."""
    return render.render()
