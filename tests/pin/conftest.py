"""Fixtures for the ``kitpin pin`` tests.

- ``pin_registry`` (session): a real ``registry`` process (plain HTTP, no auth), started only
  by the tests that ask for it (integration tests); unit tests never start a process.
- ``pin_repo`` (function): a repository name no other test uses.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Generator, Iterator

import pytest

from harness import tools
from harness.registry import RegistryServer


@pytest.fixture(scope="session")
def pin_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    binary = tools.ensure("registry")["registry"]
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("pin-registry"), name="pin-registry", binary=binary
    ) as server:
        yield server


@pytest.fixture
def pin_repo(request: pytest.FixtureRequest) -> str:
    short = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    short = short.strip("-")[:40].strip("-") or "test"
    return f"pin/{short}-{secrets.token_hex(3)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, RegistryServer):
                report.sections.append((f"{value.name} log", value.log_tail(80)))
    return report
