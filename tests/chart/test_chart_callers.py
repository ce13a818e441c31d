"""clientAuth: the chart makes kitpin require the apiserver's client certificate, moves the
probes and /metrics to the plain probe port, and refuses values that contradict each other;
settings.server (the graceful stop) fits in the pod's grace period."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller import cli, settings
from harness import chart as render
from harness import pki

pytestmark = pytest.mark.integration

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = render.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _volumes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pod = render.one(docs, "Deployment")["spec"]["template"]["spec"]
    return {v["name"]: v for v in pod["volumes"]}


def test_off_by_default_everything_on_the_webhook_port(default_docs: list[dict[str, Any]]) -> None:
    container = _container(default_docs)
    args = cli.build_parser().parse_args(container["args"])
    assert (args.client_ca, args.client_name, args.probe_port) == (None, [], None)
    assert [p["name"] for p in container["ports"]] == ["https"]
    assert "client-ca" not in _volumes(default_docs)
    service = render.one(default_docs, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["https"]
    assert not [d for d in default_docs if d["metadata"]["name"] == "kitpin-client-ca"]


def test_enabled_requires_the_apiservers_certificate_and_moves_the_probes(tmp_path: Path) -> None:
    ca = pki.CA("webhook-client-ca")
    docs = render.render(
        {
            "clientAuth": {
                "enabled": True,
                "caBundle": ca.cert_pem.decode(),
                "allowedNames": ["kube-apiserver", "apiserver-webhook"],
                "probePort": 9090,
            },
            "metrics": {"serviceMonitor": {"enabled": True}},
        }
    )
    container = _container(docs)
    args = cli.build_parser().parse_args(container["args"])
    assert args.client_ca == "/etc/kitpin/client-ca/ca.crt"
    assert args.client_name == ["kube-apiserver", "apiserver-webhook"]
    assert args.probe_port == 9090
    assert {"name": "probes", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "probes"
        assert container[probe]["httpGet"]["scheme"] == "HTTP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    # The CA reaches the file --client-ca names, and kitpin loads it.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["client-ca"] == "/etc/kitpin/client-ca"
    assert _volumes(docs)["client-ca"]["configMap"] == {
        "name": "kitpin-client-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    stored = render.one(docs, "ConfigMap", "kitpin-client-ca")["data"]["ca.crt"]
    (tmp_path / "ca.crt").write_text(stored)
    server = settings.server_settings(
        settings.ServerSettings(), client_ca=str(tmp_path / "ca.crt"), probe_port=9090
    )
    assert server.client_ca == tmp_path / "ca.crt"

    # Prometheus, helm test and the NetworkPolicy follow the probes to their port.
    service_ports = {p["name"]: p for p in render.one(docs, "Service")["spec"]["ports"]}
    assert service_ports["probes"]["port"] == 9090
    assert service_ports["probes"]["targetPort"] == "probes"
    (endpoint,) = render.one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "probes",
        "http",
        "/metrics",
    )
    assert "tlsConfig" not in endpoint
    policy = render.one(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"] == [
        {"ports": [{"port": "https", "protocol": "TCP"}, {"port": "probes", "protocol": "TCP"}]}
    ]
    (check,) = render.one(docs, "Pod")["spec"]["containers"]
    env = {e["name"]: e for e in check["env"]}
    assert env["KITPIN_PROBES_URL"]["value"] == "http://kitpin.kitpin.svc:9090"
    script = check["args"][0]
    compile(script, "helm-test", "exec")
    assert "refused a review without a client certificate" in script


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        (
            {"existingSecret": "corp-webhook-ca", "caKey": "ca.pem"},
            {
                "secret": {
                    "secretName": "corp-webhook-ca",
                    "items": [{"key": "ca.pem", "path": "ca.crt"}],
                }
            },
        ),
        (
            {"existingConfigMap": "corp-webhook-ca"},
            {
                "configMap": {
                    "name": "corp-webhook-ca",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
        ),
    ],
)
def test_the_ca_from_an_existing_secret_or_configmap(
    source: dict[str, str], volume: dict[str, Any]
) -> None:
    docs = render.render({"clientAuth": {"enabled": True, **source}})
    found = dict(_volumes(docs)["client-ca"])
    found.pop("name")
    assert found == volume
    assert not [d for d in docs if d["metadata"]["name"] == "kitpin-client-ca"]


CONTRADICTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "enabled without a CA": (
        {"clientAuth": {"enabled": True}},
        "clientAuth.enabled=true needs exactly one source of the CA",
    ),
    "enabled with two CAs": (
        {"clientAuth": {"enabled": True, "caBundle": PEM, "existingSecret": "s"}},
        "got 2 (clientAuth.caBundle, clientAuth.existingSecret)",
    ),
    "a CA without enabling it": (
        {"clientAuth": {"existingSecret": "s"}},
        "clientAuth.existingSecret set but clientAuth.enabled=false: kitpin would not check",
    ),
    "allowed names without enabling it": (
        {"clientAuth": {"allowedNames": ["kube-apiserver"]}},
        "clientAuth.allowedNames set but clientAuth.enabled=false",
    ),
    "a base64 CA": (
        {"clientAuth": {"enabled": True, "caBundle": "LS0tLS1CRUdJTi=="}},
        "clientAuth.caBundle must be PEM",
    ),
    "the probe port on the webhook port": (
        {"clientAuth": {"enabled": True, "existingSecret": "s", "probePort": 8443}},
        "clientAuth.probePort (8443) is containerPort",
    ),
    "a TLS scrape of the plain probe port": (
        {
            "clientAuth": {"enabled": True, "existingSecret": "s"},
            "metrics": {"serviceMonitor": {"enabled": True, "tlsConfig": {"ca": {}}}},
        },
        "metrics.serviceMonitor.tlsConfig is set but clientAuth.enabled=true",
    ),
    "a drain longer than the stop": (
        {"settings": {"server": {"drainSeconds": 20, "shutdownSeconds": 15}}},
        "settings.server.drainSeconds (20) exceeds settings.server.shutdownSeconds (15)",
    ),
    "a stop as long as the grace period": (
        {"terminationGracePeriodSeconds": 15},
        "settings.server.shutdownSeconds (15) must be below terminationGracePeriodSeconds (15)",
    ),
}


@pytest.mark.parametrize(
    ("values", "message"), list(CONTRADICTIONS.values()), ids=list(CONTRADICTIONS)
)
def test_contradictory_values_fail_with_the_charts_message(
    values: dict[str, Any], message: str
) -> None:
    result = render.template(values)
    assert result.returncode != 0, f"rendered although contradictory: {values}"
    assert message in result.stderr, result.stderr


def test_the_default_stop_fits_the_grace_period(default_docs: list[dict[str, Any]]) -> None:
    pod = render.one(default_docs, "Deployment")["spec"]["template"]["spec"]
    defaults = settings.ServerSettings()
    # kopf still waits up to 5 s for its own tasks once the server has stopped.
    assert defaults.shutdown_seconds + 5 < pod["terminationGracePeriodSeconds"]
