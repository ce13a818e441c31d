"""Fixtures for end-to-end tests against a real control plane (etcd, kube-apiserver,
kube-controller-manager; no scheduler or kubelet, so pods stay Pending).

- ``control_plane`` (session): started once; the tools are built first if missing (a test
  session without them fails, it never skips). Any failing test gets the log tails of all
  three components appended to its report.
- ``api`` (session): :class:`~tests.harness.controlplane.Clients` (core, apps, admission,
  custom objects) authenticated as a cluster admin.
- ``namespace`` (function): a fresh ``e2e-<test>-<random>`` namespace whose ``default``
  ServiceAccount exists (pods are admitted), deleted afterwards without waiting.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Generator, Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness import procs, tools
from tests.harness.controlplane import Clients, ControlPlane

NAMESPACE_READY_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    tools.ensure("etcd", "kube-apiserver", "kube-controller-manager")
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    cp.start()  # stops whatever it started if it fails
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[Clients]:
    clients = control_plane.clients()
    try:
        yield clients
    finally:
        clients.close()


def _namespace_name(test_name: str) -> str:
    short = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_"))
    short = short.strip("-")[:40].strip("-") or "test"
    return f"e2e-{short}-{secrets.token_hex(3)}"  # <= 4 + 40 + 7 < 63 (a DNS label)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: Clients) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    api.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        # The ServiceAccount admission plugin rejects pods until `default` exists.
        procs.wait_until(
            lambda: api.core.read_namespaced_service_account("default", name),
            timeout=NAMESPACE_READY_TIMEOUT,
            what=f"ServiceAccount default in namespace {name}",
        )
        yield name
    finally:
        with contextlib.suppress(ApiException):
            api.core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        cp = funcargs.get("control_plane")
        if isinstance(cp, ControlPlane):
            report.sections.append(("control plane logs", cp.logs()))
    return report
