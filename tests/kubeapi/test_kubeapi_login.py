"""`kitpin run`'s login (controller.operator.KubeLogin): kopf's rudimentary login functions,
the in-cluster service host, and the kubernetes client only for exec plugins."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import kopf
import pytest

from controller import kubeapi, operator
from tests.kubeapi.fakeapi import FakeApiServer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def no_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not in a pod, whatever this machine has at /var/run/secrets."""
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)


@pytest.mark.usefixtures("no_service_account")
async def test_a_client_certificate_kubeconfig_logs_in_without_the_kubernetes_client(
    fake_api: FakeApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kubeconfig of `make dev-up` (and the e2e harness): certificates embedded."""
    client = fake_api.ca.issue_cert("admin.test", common_name="kitpin-admin")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        "contexts: [{name: dev, context: {cluster: dev, user: admin}}]\n"
        f"clusters: [{{name: dev, cluster: {{server: '{fake_api.server}', "
        f"certificate-authority-data: {fake_api.ca_b64}}}}}]\n"
        f"users: [{{name: admin, user: {{client-certificate-data: "
        f"{b64(client.cert_chain_pems[0].bytes())}, "
        f"client-key-data: {b64(client.private_key_pem.bytes())}}}}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    def no_client(**_: Any) -> None:
        raise AssertionError("the kubernetes client's login is for exec plugins only")

    monkeypatch.setattr(kopf, "login_via_client", no_client)
    login = operator.KubeLogin(kopf.OperatorSettings())
    info = login()
    assert not login.in_cluster
    assert info.server == fake_api.server
    fake_api.put("/api/v1/namespaces/ns/secrets/s", {"kind": "Secret"})
    async with kubeapi.KubeAPI(info, relogin=login) as api:
        await api.get("/api/v1/namespaces/ns/secrets/s")
        again = await api.relogin()
    assert again == info  # the same login for kopf
    assert fake_api.seen[0].user == "cert:kitpin-admin"


@pytest.mark.usefixtures("no_service_account")
def test_an_exec_plugin_falls_back_to_the_kubernetes_clients_login_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "current-context: eks\n"
        "contexts: [{name: eks, context: {cluster: eks, user: aws}}]\n"
        "clusters: [{name: eks, cluster: {server: 'https://eks.example'}}]\n"
        "users: [{name: aws, user: {exec: {command: aws}}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    calls: list[dict[str, Any]] = []

    def via_client(**kwargs: Any) -> kopf.ConnectionInfo:
        calls.append(kwargs)
        return kopf.ConnectionInfo(server="https://eks.example", token=f"exec-{len(calls)}")

    monkeypatch.setattr(kopf, "login_via_client", via_client)
    login = operator.KubeLogin(kopf.OperatorSettings())
    with caplog.at_level(logging.INFO, logger="controller.operator"):
        assert login().token == "exec-1"
        assert login().token == "exec-2"  # a relogin runs the plugin again
    said = [r.getMessage() for r in caplog.records if "kubernetes client library" in r.message]
    assert len(said) == 1 and "'exec'" in said[0]  # once, not at every relogin


@pytest.mark.usefixtures("no_service_account")
def test_no_cluster_and_no_kubeconfig_is_a_login_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError, match="no kubeconfig"):
        operator.KubeLogin(kopf.OperatorSettings())()


@pytest.mark.parametrize(
    ("host", "port", "server"),
    [
        ("10.96.0.1", "443", "https://10.96.0.1:443"),
        ("fd00::1", "6443", "https://[fd00::1]:6443"),
        (None, None, "https://kubernetes.default.svc"),  # kopf's, when the kubelet set none
    ],
)
def test_in_cluster_the_service_account_and_the_service_host(
    monkeypatch: pytest.MonkeyPatch, host: str | None, port: str | None, server: str
) -> None:
    tokens = iter(["first", "rotated"])

    def service_account(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server="https://kubernetes.default.svc", token=next(tokens), ca_path="/sa/ca.crt"
        )

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    for name, value in (("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", port)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    login = operator.KubeLogin(kopf.OperatorSettings())
    info = login()
    assert login.in_cluster
    assert (info.server, info.token, info.ca_path) == (server, "first", "/sa/ca.crt")
    assert login().token == "rotated"  # each login reads the token again
