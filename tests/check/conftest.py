"""Fixtures for the ``kitpin check`` tests, reused from the ``kitpin pin`` tests
(tests/pin/conftest.py): ``pin_registry``, a real ``registry`` process started only by the
integration tests that ask for it; ``pin_repo``, a repository name no other test uses; and
the hook that attaches the registry's log to a failed test's report."""

from __future__ import annotations

from tests.pin.conftest import pin_registry, pin_repo, pytest_runtest_makereport

__all__ = ["pin_registry", "pin_repo", "pytest_runtest_makereport"]
