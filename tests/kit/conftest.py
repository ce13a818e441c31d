"""Fixtures for tests that run the real KitOps ``kit`` CLI (:mod:`harness.kit`).

- ``kit_path`` (session): the kit binary (``$KITPIN_KIT``, else ``kit`` on ``PATH``); every
  test that uses it is skipped, with the reason, when there is none.
- ``kit_version`` (session): what ``kit version`` prints (``1.7.0-19-ga041892``), which kit
  stamps into ``ml.kitops.modelkit.cli-version``.
- ``kit`` (function): a :class:`~harness.kit.Kit` with a home of its own under ``tmp_path``.
- ``registry`` (session): a real plain-HTTP ``registry`` for the few tests that push
  (marked ``integration``).

A failing test gets the registry's log tail appended to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from harness import kit as harness_kit
from harness import tools
from harness.registry import RegistryServer


@pytest.fixture(scope="session")
def kit_path() -> Path:
    try:
        return harness_kit.find()
    except harness_kit.KitNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def kit_version(kit_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return harness_kit.Kit(tmp_path_factory.mktemp("kit-version"), path=kit_path).version()


@pytest.fixture
def kit(kit_path: Path, tmp_path: Path) -> harness_kit.Kit:
    return harness_kit.Kit(tmp_path / "kit", path=kit_path)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    binary = tools.ensure("registry")["registry"]
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("registry-kit"), name="registry-kit", binary=binary
    ) as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    server = getattr(item, "funcargs", {}).get("registry")
    if report.failed and isinstance(server, RegistryServer):
        report.sections.append(("registry log", server.log_tail(40)))
    return report
