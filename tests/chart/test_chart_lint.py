"""`helm lint --strict` is clean for every certificate mode and the main options.

(`helm lint` reports a template's `fail` only as [INFO]: the contradictions are tested with
`helm template` in test_chart_tls.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from harness import chart as render
from harness import tools

pytestmark = pytest.mark.integration

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

CASES: dict[str, dict[str, Any]] = {
    "defaults (generated certificate)": {},
    "cert-manager, own CA": {"tls": {"certManager": {"enabled": True}}},
    "cert-manager, given issuer": {
        "tls": {
            "certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}
        }
    },
    "existing Secret": {"tls": {"existingSecret": "my-tls", "caBundle": PEM}},
    "existing Secret, injected CA": {"tls": {"existingSecret": "my-tls", "caBundleInjected": True}},
    "caller authentication, the chart's own CA ConfigMap": {
        "clientAuth": {"enabled": True, "caBundle": PEM, "allowedNames": ["kube-apiserver"]},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "caller authentication, an existing Secret": {
        "clientAuth": {"enabled": True, "existingSecret": "webhook-client-ca", "caKey": "ca.pem"}
    },
    "caller authentication, an existing ConfigMap": {
        "clientAuth": {"enabled": True, "existingConfigMap": "webhook-client-ca"}
    },
    "no NetworkPolicy": {"networkPolicy": {"enabled": False}},
    "everything optional on": {
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "registry": {
            "credentials": {"existingSecret": "central-creds"},
            "caBundles": {"reg.pem": PEM},
            "hosts": {"reg.internal:443": {"caFile": "/etc/kitpin/ca/reg.pem"}},
        },
        "settings": {
            "mode": "pods-only",
            "sites": {
                "extra": [
                    {
                        "group": "ml.example.com",
                        "kind": "ModelDeployment",
                        "plural": "modeldeployments",
                        "paths": ["spec.models[*].source"],
                    }
                ]
            },
        },
    },
}


@pytest.mark.parametrize("values", list(CASES.values()), ids=list(CASES))
def test_lint_is_clean(values: dict[str, Any]) -> None:
    result = render.run_helm(
        ["lint", str(render.CHART_DIR), "--strict", "--kube-version", render.kube_version()],
        values=values,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_plain_helm_template_renders_without_a_kube_version() -> None:
    """The pinned helm carries the Kubernetes version of its client-go, as helm's release
    build stamps it (hack/tools.sh build_helm): ``helm template`` with no cluster and no
    ``--kube-version`` meets the chart's ``kubeVersion``."""
    version = render.run_helm(["version", "--template", "{{.Version}}"])
    assert version.stdout.strip() == tools.versions()["HELM_VERSION"], version.stderr

    result = render.run_helm(["template", "kitpin", str(render.CHART_DIR)])

    assert result.returncode == 0, result.stderr
    assert any(d.get("kind") == "Deployment" for d in result.docs)
