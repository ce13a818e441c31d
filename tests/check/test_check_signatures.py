"""``kitpin check`` and policy ``signatures``: verified online through the webhook's own
path (:class:`controller.admission.signing.Signing`), with the same verdict and messages as
the validating webhook; key Secrets come from the ``--policy`` files; offline, the rule is
not checked. The registry and the verifier are fakes here (the engine's); the e2e test runs
the real ones."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from check_helpers import (
    DEPLOYMENT_POINTER,
    REGISTRY,
    cluster_policy,
    deployment,
    namespaced_policy,
    rows,
    run_check,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller import policy
from controller.admission import pinning, signing
from controller.cli import common
from tests.admission.pinning_fakes import FakeConfigs, FakeResolver, FakeVerifier

NAMESPACE = "ml"
LLAMA = f"{REGISTRY}/ml/llama:v1"
RELEASE = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
INLINE = {"signatures": {"keys": [{"name": "release", "publicKey": RELEASE}]}}


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch, resolver: FakeResolver) -> FakeVerifier:
    """Online ``kitpin check`` with the fake resolver and verifier in place of the registry."""
    fake = FakeVerifier()

    @contextlib.asynccontextmanager
    async def fake_registry(access: common.Access) -> AsyncIterator[tuple[Any, Any]]:
        yield FakeConfigs({}), resolver

    monkeypatch.setattr(common, "registry", fake_registry)
    monkeypatch.setattr(common, "signature_verifier", lambda client: fake)
    return fake


def files(tmp_path: Path, *policies: Mapping[str, Any]) -> tuple[Path, Path]:
    app = tmp_path / "app.yaml"
    app.write_text(deployment("llama", LLAMA, namespace=NAMESPACE))
    given = tmp_path / "policies.yaml"
    given.write_text(yaml.safe_dump_all(policies, sort_keys=False))
    return app, given


def test_a_signed_modelkit_passes(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    verifier: FakeVerifier,
) -> None:
    verifier.signed[resolver.digest(LLAMA)] = {"release"}
    app, given = files(tmp_path, cluster_policy("signed", INLINE))
    result = run_check(capsys, "-f", app, "--policy", given, "-o", "json")
    assert result.code == 0, result
    (ref,) = rows(result, "references")
    assert ref["result"] == "pass"
    assert verifier.calls == [(resolver.digest(LLAMA), ("release",), None)]


@pytest.mark.parametrize(
    ("mode", "code", "result"), [("enforce", 1, "fail"), ("warn", 0, "warn"), ("audit", 0, "warn")]
)
def test_an_unsigned_modelkit_violates_the_rule_in_its_mode(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    verifier: FakeVerifier,
    mode: str,
    code: int,
    result: str,
) -> None:
    spec = {"signatures": {**INLINE["signatures"], "mode": mode}}
    app, given = files(tmp_path, cluster_policy("signed", spec))
    checked = run_check(capsys, "-f", app, "--policy", given, "-o", "json")
    assert checked.code == code, checked
    (v,) = rows(checked, "violations")
    assert (v["rule"], v["reason"], v["mode"]) == ("signatures.keys", "SignatureMissing", mode)
    assert f"resolves to {resolver.digest(LLAMA)}, which has no valid signature" in v["message"]
    assert rows(checked, "references")[0]["result"] == result


def test_check_and_the_webhook_say_the_same(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    verifier: FakeVerifier,
) -> None:
    verifier.signed[resolver.digest(LLAMA)] = {"stranger"}
    app, given = files(tmp_path, cluster_policy("signed", INLINE))
    checked = run_check(capsys, "-f", app, "--policy", given, "-o", "json")
    (v,) = rows(checked, "violations")

    obj = yaml.safe_load(app.read_text())
    review = pinning.Review(
        operation="CREATE",
        namespace=NAMESPACE,
        obj=obj,
        policies=policy.parse_policies([cluster_policy("signed", INLINE)]),
    )
    engine = pinning.Engine(resolver, signatures=signing.Signing(verifier))
    decision = asyncio.run(engine.validate(review))
    (w,) = decision.violations
    assert (v["rule"], v["reason"], v["message"]) == (w.rule, w.reason, w.message)
    assert w.reason == "SignatureInvalid"


def test_offline_the_signature_is_not_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app, given = files(tmp_path, cluster_policy("signed", INLINE))
    checked = run_check(capsys, "-f", app, "--policy", given, "-o", "json", "--offline")
    assert checked.code == 0
    (u,) = rows(checked, "unchecked")
    assert u["rule"] == "signatures.keys"
    assert u["message"] == "the reference was not resolved, so the digest to verify is unknown"
    assert rows(checked, "references")[0]["result"] == "skip"
    failing = run_check(
        capsys, "-f", app, "--policy", given, "--offline", "--fail-on-skip", "-o", "json"
    )
    assert failing.code == 1


def secret(name: str, namespace: str, pem: str, key: str = "cosign.pub") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(pem.encode()).decode()},
    }


SECRET_KEYS = {"signatures": {"keys": [{"name": "release", "secretRef": {"name": "cosign"}}]}}


@pytest.mark.parametrize(
    ("policy_doc", "secret_namespace", "args"),
    [
        (cluster_policy("signed", SECRET_KEYS), "kitpin", []),
        (cluster_policy("signed", SECRET_KEYS), "platform", ["--kitpin-namespace", "platform"]),
        (namespaced_policy("signed", SECRET_KEYS, namespace=NAMESPACE), NAMESPACE, []),
    ],
)
def test_a_secret_key_comes_from_the_policy_files(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    verifier: FakeVerifier,
    policy_doc: dict[str, Any],
    secret_namespace: str,
    args: list[str],
) -> None:
    verifier.signed[resolver.digest(LLAMA)] = {"release"}
    app, given = files(tmp_path, policy_doc, secret("cosign", secret_namespace, RELEASE))
    checked = run_check(capsys, "-f", app, "--policy", given, "-o", "json", *args)
    assert checked.code == 0, checked
    assert rows(checked, "references")[0]["result"] == "pass"


def test_a_missing_secret_is_an_error_under_enforce(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    resolver: FakeResolver,
    verifier: FakeVerifier,
) -> None:
    verifier.signed[resolver.digest(LLAMA)] = {"release"}
    app, given = files(tmp_path, cluster_policy("signed", SECRET_KEYS))
    checked = run_check(capsys, "-f", app, "--policy", given, "-o", "json")
    assert checked.code == 1
    (error,) = rows(checked, "errors")
    assert error["reason"] == "SignatureUnavailable"
    assert error["path"] == DEPLOYMENT_POINTER
    assert (
        "the key 'release' (spec.signatures.keys[0].secretRef: Secret kitpin/cosign, key "
        "cosign.pub) cannot be read: Secret kitpin/cosign is not among the --policy files"
    ) in error["message"]
    assert rows(checked, "references")[0]["result"] == "error"
