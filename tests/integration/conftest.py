"""Fixtures for integration tests: real ``registry`` processes and a real token issuer, no
control plane.

Servers are session-scoped (a registry starts in well under a second, but there is no reason
to start one per test); tests isolate themselves by repository name (:func:`repo`). Any
failing test gets the log tail of every registry it used, and the token requests the issuer
saw, appended to its report.

- ``plain_registry``: plain HTTP, no auth.
- ``tls_registry``: HTTPS with a throwaway CA (``tls_registry.ca_file``), no auth.
- ``basic_registry``: plain HTTP, htpasswd Basic auth for :data:`BASIC_USER`.
- ``token_issuer`` + ``token_registry``: plain-HTTP registry whose ``auth.token`` realm is the
  issuer, served over HTTPS (kitpin, rightly, refuses a plain-HTTP realm on another host).
- ``make_client``: ``make_client(policy)`` → a :class:`controller.registry.RegistryClient`,
  closed after the test.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import registry
from harness import tools
from harness.registry import RegistryServer
from harness.tokenissuer import TokenIssuer

BASIC_USER = ("alice", "wonderland-7f3a")
TOKEN_USER = ("bob", "builder-91c2")

MakeClient = Callable[..., registry.RegistryClient]


@pytest.fixture(scope="session")
def registry_binary() -> Path:
    """The pinned ``registry`` binary, built first if missing (never a skip)."""
    return tools.ensure("registry")["registry"]


@pytest.fixture(scope="session")
def plain_registry(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("registry-plain"), binary=registry_binary
    ) as server:
        yield server


@pytest.fixture(scope="session")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("registry-tls"),
        name="registry-tls",
        tls=True,
        binary=registry_binary,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    user, password = BASIC_USER
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("registry-basic"),
        name="registry-basic",
        htpasswd={user: password},
        binary=registry_binary,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def token_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
    user, password = TOKEN_USER
    with TokenIssuer(
        users={user: password}, tls=True, workdir=tmp_path_factory.mktemp("token-issuer")
    ) as issuer:
        yield issuer


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("registry-token"),
        name="registry-token",
        token=token_issuer.registry_auth(),
        binary=registry_binary,
    ) as server:
        yield server


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses: ``it/<test name>-<random>``."""
    short = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    short = short.strip("-")[:40].strip("-") or "test"
    return f"it/{short}-{secrets.token_hex(3)}"


def plain_http_policy(*servers: RegistryServer) -> registry.HostPolicy:
    """A host policy speaking plain HTTP to each of ``servers``."""
    return registry.HostPolicy(
        registries={s.host: registry.RegistryHostConfig(plain_http=True) for s in servers}
    )


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    made: list[registry.RegistryClient] = []

    def make(policy: registry.HostPolicy | None = None, **kwargs: Any) -> registry.RegistryClient:
        client = registry.RegistryClient(policy, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, RegistryServer):
                report.sections.append((f"{value.name} log", value.log_tail(80)))
            elif isinstance(value, TokenIssuer):
                lines = "\n".join(repr(r) for r in value.requests[-20:])
                report.sections.append(("token issuer requests", lines or "(none)"))
    return report
