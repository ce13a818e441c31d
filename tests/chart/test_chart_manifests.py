"""deploy/ stays what `make manifests` renders from the chart, and builds with kustomize into
a base whose webhooks trust the certificate kitpin serves. (Accepted by a real apiserver:
tests/e2e/test_chart_e2e.py.)"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller.admission import webhook
from hack import manifests
from harness import chart as render
from harness.controlplane import kubectl_binary

pytestmark = pytest.mark.integration

GEN_CERTS = manifests.DEPLOY_DIR / "gen-certs.sh"


def build_deploy(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A copy of deploy/ with fresh certificates, and its ``kubectl kustomize`` output."""
    base = tmp_path / "deploy"
    shutil.copytree(manifests.DEPLOY_DIR, base, ignore=shutil.ignore_patterns("*.crt", "*.key"))
    subprocess.run(
        ["bash", str(GEN_CERTS), "--out", str(base / "certs")], check=True, capture_output=True
    )
    built = subprocess.run(
        [kubectl_binary(), "kustomize", str(base)], check=True, capture_output=True, text=True
    )
    return base, [d for d in yaml.safe_load_all(built.stdout) if d]


def test_deploy_is_rendered_from_the_chart() -> None:
    diffs = manifests.differences()
    assert diffs == [], "\n".join(diffs) + "\nrun `make manifests`"


def test_chart_crds_are_a_copy_of_deploy_crds() -> None:
    expected = manifests.chart_crds_expected()
    actual = {p.name: p.read_bytes() for p in manifests.crd_files(manifests.CHART_CRDS)}
    assert actual == expected


def test_kustomize_base_injects_the_ca_that_signed_the_serving_certificate(tmp_path: Path) -> None:
    base, docs = build_deploy(tmp_path)
    ca_pem = (base / "certs" / "ca.crt").read_bytes()
    secret = render.one(docs, "Secret", manifests.TLS_SECRET)
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["namespace"] == "kitpin"
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca_pem

    webhooks = [
        w
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for w in render.one(docs, kind)["webhooks"]
    ]
    assert len(webhooks) == 2 * len(webhook.BUILTIN_RESOURCES) + len(webhook.POLICY_PLURALS)
    for w in webhooks:
        assert base64.b64decode(w["clientConfig"]["caBundle"]) == ca_pem, w["name"]
        assert w["clientConfig"]["service"]["namespace"] == "kitpin"

    pod = render.one(docs, "Deployment")["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == manifests.TLS_SECRET
    assert render.one(docs, "Namespace")["metadata"]["name"] == "kitpin"
    assert not render.find(docs, "Pod"), "the helm test hook must not be in deploy/"
    assert all(
        d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize"
        for d in docs
        if "app.kubernetes.io/part-of" in d["metadata"].get("labels", {})
        and d["kind"] != "Namespace"
    )


def test_gen_certs_makes_a_serving_certificate_for_the_service(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    subprocess.run(
        ["bash", str(GEN_CERTS), "--namespace", "ml-ops", "--service", "pinner", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "pinner",
        "pinner.ml-ops",
        "pinner.ml-ops.svc",
        "pinner.ml-ops.svc.cluster.local",
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (out / "tls.key").stat().st_mode & 0o077 == 0

    again = subprocess.run(
        ["bash", str(GEN_CERTS), "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 1 and "use --force" in again.stderr
