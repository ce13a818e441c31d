"""``kitpin pin --verify``: pin only digests whose cosign signature verifies with the
``--key`` files, through the webhook's own path (:class:`controller.admission.signing.Signing`
over the real verifier and registry client). The unit tests serve the registry from memory;
the integration test signs with the real cosign CLI in the real distribution registry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pin_helpers import run_kitpin

from controller import cli
from controller.cli import common
from controller.resolver import Resolver
from harness import modelkit
from harness.cosign import Cosign
from harness.registry import RegistryServer
from tests.signatures.cosign_fakes import REGISTRY, REPOSITORY, Signer, Store, client

REF = f"{REGISTRY}/{REPOSITORY}"


def pod(value: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1\n"
        f"      env: [{{name: MODELKIT_REF, value: '{value}'}}]\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """``kitpin pin`` reaches the in-memory registry (the real client and resolver)."""
    served = Store()

    @contextlib.asynccontextmanager
    async def in_memory(access: common.Access) -> AsyncIterator[tuple[Any, Any]]:
        async with client(served) as c:
            yield c, Resolver(c)

    monkeypatch.setattr(common, "registry", in_memory)
    yield served


def key_file(tmp_path: Path, signer: Signer, name: str = "release.pub") -> Path:
    path = tmp_path / name
    path.write_text(signer.public_pem)
    return path


def pin(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    return path


def test_a_signed_digest_is_pinned(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    release = Signer.make("ecdsa")
    digest = store.modelkit("v1")
    store.sign_legacy(digest, release)
    manifest = pin(tmp_path, pod(f"{REF}:v1"))
    code = cli.main(
        ["pin", "-f", str(manifest), "--verify", "--key", str(key_file(tmp_path, release))]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == pod(f"{REF}:v1@{digest}")


@pytest.mark.parametrize("case", ["unsigned", "foreign", "copied"])
def test_a_digest_not_signed_as_required_is_not_pinned(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    release, stranger = Signer.make("ecdsa"), Signer.make("ecdsa")
    digest = store.modelkit("v1")
    if case == "foreign":
        store.sign_legacy(digest, stranger)
    if case == "copied":  # a valid signature of another digest, placed under this one
        other = store.modelkit("v2", seed=9)
        store.sign_legacy(other, release, onto=digest)
    manifest = pin(tmp_path, pod(f"{REF}:v1"))
    before = manifest.read_text()
    code = cli.main(
        [
            "pin",
            "-f",
            str(manifest),
            "-i",
            "--verify",
            "--key",
            f"release={key_file(tmp_path, release, 'cosign.pub')}",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert manifest.read_text() == before  # nothing written
    reason = "SignatureMissing" if case == "unsigned" else "SignatureInvalid"
    assert f"cannot pin '{REF}:v1': {reason}: " in err, err
    assert "nothing written: 1 of 1 reference(s) could not be pinned" in err
    if case == "copied":
        assert f"its payload names {other}" in err


def test_require_all_and_keep_going(
    tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    release, ci = Signer.make("ecdsa"), Signer.make("ed25519")
    both = store.modelkit("both", seed=1)
    one = store.modelkit("one", seed=2)
    for signer in (release, ci):
        store.sign_legacy(both, signer)
    store.sign_legacy(one, release)
    text = pod(f"{REF}:both") + "---\n" + pod(f"{REF}:one")
    manifest = pin(tmp_path, text)
    keys = [
        "--key",
        str(key_file(tmp_path, release)),
        "--key",
        str(key_file(tmp_path, ci, "ci.pub")),
    ]
    code = cli.main(
        ["pin", "-f", str(manifest), "--verify", *keys, "--require", "all", "--keep-going"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert out == pod(f"{REF}:both@{both}") + "---\n" + pod(f"{REF}:one")
    assert "SignatureInvalid: every listed key must have signed" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--verify"], "--verify needs the public keys to verify with: --key cosign.pub"),
        (["--key", "cosign.pub"], "--key is for --verify"),
        (["--verify", "--key", "missing.pub"], "--key missing.pub: cannot read it"),
    ],
)
def test_usage(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = pin(tmp_path, pod(f"{REF}:v1"))
    assert cli.main(["pin", "-f", str(manifest), *args]) == 2
    assert expected in capsys.readouterr().err


def test_a_key_kitpin_cannot_use_is_refused_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p384 = tmp_path / "p384.pub"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    manifest = pin(tmp_path, pod(f"{REF}:v1"))
    assert cli.main(["pin", "-f", str(manifest), "--verify", "--key", str(p384)]) == 2
    err = capsys.readouterr().err
    assert f"--key {p384}: is an ECDSA key on secp384r1" in err


# -- the real cosign, the real registry ----------------------------------------------------------


@pytest.mark.integration
def test_cosign_signed_modelkits_pin_and_unsigned_ones_do_not(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    cosign = Cosign(tmp_path / "cosign")
    keys = cosign.generate_key_pair("release")
    signed = modelkit.push_modelkit(pin_registry, f"{pin_repo}/signed", "v1", seed=1)
    unsigned = modelkit.push_modelkit(pin_registry, f"{pin_repo}/unsigned", "v1", seed=2)
    cosign.sign(f"{pin_registry.host}/{pin_repo}/signed@{signed}", keys)

    ok = tmp_path / "ok.yaml"
    ok.write_text(pod(f"{pin_registry.host}/{pin_repo}/signed:v1"))
    done = run_kitpin("-v", "pin", "-f", ok, "--plain-http", "--verify", "--key", keys.pub)
    assert done.returncode == 0, done.stderr
    assert done.stdout == pod(f"{pin_registry.host}/{pin_repo}/signed:v1@{signed}")
    assert "is signed by the key 'release'" in done.stderr  # -v logs what verified it

    bad = tmp_path / "bad.yaml"
    bad.write_text(pod(f"{pin_registry.host}/{pin_repo}/unsigned:v1"))
    refused = run_kitpin("pin", "-f", bad, "--plain-http", "--verify", "--key", keys.pub)
    assert refused.returncode == 1 and refused.stdout == ""
    assert (
        f"cannot pin '{pin_registry.host}/{pin_repo}/unsigned:v1': SignatureMissing: "
        f"{pin_registry.host}/{pin_repo}/unsigned@{unsigned} is not signed"
    ) in refused.stderr
