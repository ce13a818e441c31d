"""The three certificate sources, and the contradictions the chart refuses."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
import trustme
from cryptography import x509

from controller.admission import webhook as kitpin_webhook
from harness import chart as render

pytestmark = pytest.mark.integration

NAMESPACE = "kitpin-system"
SERVICE_NAMES = [
    "kitpin",
    f"kitpin.{NAMESPACE}",
    f"kitpin.{NAMESPACE}.svc",
    f"kitpin.{NAMESPACE}.svc.cluster.local",
]


def _webhooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        w
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for config in render.find(docs, kind)
        for w in config["webhooks"]
    ]


def _tls_volume(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = render.one(docs, "Deployment")["spec"]["template"]["spec"]
    return next(v for v in pod["volumes"] if v["name"] == "tls")


def test_generated_certificate_is_valid_for_the_service_and_matches_every_ca_bundle() -> None:
    docs = render.render(namespace=NAMESPACE)
    secret = render.one(docs, "Secret", "kitpin-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(ca_pem)

    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == SERVICE_NAMES
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=3000
    )
    webhooks = _webhooks(docs)
    expected = 2 * len(kitpin_webhook.BUILTIN_RESOURCES) + len(kitpin_webhook.POLICY_PLURALS)
    assert len(webhooks) == expected
    for webhook in webhooks:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem, webhook["name"]
    assert _tls_volume(docs)["secret"]["secretName"] == "kitpin-tls"


def test_generated_mode_reuses_an_existing_secret_on_upgrade() -> None:
    """`lookup` returns nothing under `helm template`; what matters is that the template
    asks for the Secret it would create (checked for real in tests/e2e/test_chart_e2e.py)."""
    text = (render.CHART_DIR / "templates" / "webhooks.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $secretName' in text


def test_cert_manager_with_its_own_ca() -> None:
    docs = render.render({"tls": {"certManager": {"enabled": True}}}, namespace=NAMESPACE)
    assert not render.find(docs, "Secret")
    issuers = {d["metadata"]["name"]: d["spec"] for d in render.find(docs, "Issuer")}
    assert issuers == {
        "kitpin-selfsigned": {"selfSigned": {}},
        "kitpin-ca": {"ca": {"secretName": "kitpin-ca"}},
    }
    certs = {d["metadata"]["name"]: d["spec"] for d in render.find(docs, "Certificate")}
    assert certs["kitpin-ca"]["isCA"] is True
    serving = certs["kitpin-serving"]
    assert serving["secretName"] == "kitpin-tls"
    assert serving["dnsNames"] == SERVICE_NAMES
    assert serving["issuerRef"] == {
        "name": "kitpin-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = render.one(docs, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/kitpin-serving"
        )
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])
    assert _tls_volume(docs)["secret"]["secretName"] == "kitpin-tls"


def test_cert_manager_with_a_given_issuer() -> None:
    docs = render.render(
        {
            "tls": {
                "certManager": {
                    "enabled": True,
                    "issuerRef": {"name": "corp", "kind": "ClusterIssuer"},
                }
            }
        }
    )
    assert not render.find(docs, "Issuer")
    certificate = render.one(docs, "Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "corp",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_existing_secret_with_a_ca_bundle() -> None:
    ca = trustme.CA()
    pem = ca.cert_pem.bytes().decode()
    docs = render.render({"tls": {"existingSecret": "corp-tls", "caBundle": pem}})
    assert not render.find(docs, "Secret")
    assert not render.find(docs, "Certificate")
    for webhook in _webhooks(docs):
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]).decode().strip() == pem.strip()
    assert _tls_volume(docs)["secret"]["secretName"] == "corp-tls"
    test_pod = render.one(docs, "Pod")
    env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert env["KITPIN_CA"]["value"] == pem


def test_existing_secret_with_an_injected_ca_bundle() -> None:
    docs = render.render({"tls": {"existingSecret": "corp-tls", "caBundleInjected": True}})
    assert all("caBundle" not in w["clientConfig"] for w in _webhooks(docs))
    assert _tls_volume(docs)["secret"]["secretName"] == "corp-tls"


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

CONTRADICTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "cert-manager and an existing Secret": (
        {"tls": {"certManager": {"enabled": True}, "existingSecret": "corp-tls"}},
        "tls: choose ONE certificate source",
    ),
    "a CA bundle without an existing Secret": (
        {"tls": {"caBundle": PEM}},
        "tls.caBundle is only used with tls.existingSecret",
    ),
    "a CA bundle with cert-manager": (
        {"tls": {"certManager": {"enabled": True}, "caBundle": PEM}},
        "tls.caBundle is only used with tls.existingSecret",
    ),
    "an existing Secret without its CA": (
        {"tls": {"existingSecret": "corp-tls"}},
        'tls.existingSecret="corp-tls" needs the CA that signed it',
    ),
    "a CA bundle and an injected CA": (
        {"tls": {"existingSecret": "corp-tls", "caBundle": PEM, "caBundleInjected": True}},
        "contradict each other",
    ),
    "an injected CA without an existing Secret": (
        {"tls": {"caBundleInjected": True}},
        "tls.caBundleInjected=true is only meaningful with tls.existingSecret",
    ),
    "a base64 CA bundle instead of PEM": (
        {
            "tls": {
                "existingSecret": "corp-tls",
                "caBundle": base64.b64encode(PEM.encode()).decode(),
            }
        },
        "tls.caBundle must be PEM",
    ),
    "an issuer without cert-manager": (
        {"tls": {"certManager": {"issuerRef": {"name": "corp"}}}},
        "tls.certManager.issuerRef is set but tls.certManager.enabled=false",
    ),
    "a resolution deadline not below the webhook timeout": (
        {"webhook": {"timeoutSeconds": 5}, "settings": {"deadlineSeconds": 8}},
        "settings.deadlineSeconds (8) must be below webhook.timeoutSeconds (5)",
    ),
    "a PDB that blocks every drain": (
        {"replicaCount": 1},
        "podDisruptionBudget.minAvailable=1 with replicaCount=1 would block every node drain",
    ),
    "a registry CA file nobody provides": (
        {"registry": {"hosts": {"reg.internal": {"caFile": "/etc/kitpin/ca/reg.pem"}}}},
        '"reg.pem" is neither a key of registry.caBundles',
    ),
    "a relative registry CA file": (
        {"registry": {"hosts": {"reg.internal": {"caFile": "reg.pem"}}}},
        "must be an absolute path",
    ),
    "a registry CA file with plain HTTP": (
        {
            "registry": {
                "caBundles": {"reg.pem": PEM},
                "hosts": {"reg.internal": {"plainHTTP": True, "caFile": "/etc/kitpin/ca/reg.pem"}},
            }
        },
        "caFile makes no sense with plainHTTP: true",
    ),
    "one extra kind with two plurals": (
        {
            "settings": {
                "sites": {
                    "extra": [
                        {
                            "group": "ml.example.com",
                            "kind": "Model",
                            "plural": "models",
                            "paths": ["spec.a"],
                        },
                        {
                            "group": "ml.example.com",
                            "kind": "Model",
                            "plural": "modelz",
                            "paths": ["spec.b"],
                        },
                    ]
                }
            }
        },
        "one kind has one plural",
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


def test_contradictions_are_caught_when_values_come_from_set_flags() -> None:
    """`--set` makes integers (int64) where values files make float64: both are checked."""
    result = render.template(
        extra_args=["--set", "replicaCount=3", "--set", "podDisruptionBudget.minAvailable=3"]
    )
    assert result.returncode != 0
    assert "podDisruptionBudget.minAvailable=3 with replicaCount=3" in result.stderr
    result = render.template(extra_args=["--set", "webhook.timeoutSeconds=8"])
    assert result.returncode != 0
    assert "settings.deadlineSeconds (8) must be below webhook.timeoutSeconds (8)" in result.stderr
