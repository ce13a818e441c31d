"""kitpin's signature verifier against signatures the real ``cosign`` CLI made, stored in the
real distribution registry, cross-checked with ``cosign verify`` on the same digest.

cosign (hack/tools.env ``COSIGN_VERSION``) signs with keys and no transparency log
(``--tlog-upload=false``) over plain HTTP to the loopback registry
(``--allow-insecure-registry``), each of the ways it stores a signature: the
``sha256-<hex>.sig`` tag (its default), a sigstore bundle as an OCI 1.1 referrer
(``--new-bundle-format``) and simple-signing layers as a referrer
(``--registry-referrers-mode=oci-1-1``). The distribution registry has no referrers API,
so referrers are found through the ``sha256-<hex>`` tag-schema index cosign maintains (the
registry's access log shows the 404 and the fallback). A log entry is made by a test log
key and attached with ``cosign attach signature --rekor-response``, then verified offline by
both kitpin and ``cosign verify`` with that log key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from controller import refs
from controller.signatures import (
    KeySet,
    SignatureInvalid,
    SignatureMissing,
    SignatureUnavailable,
    Verified,
    Verifier,
    parse_public_key,
)
from harness import modelkit
from harness.cosign import Cosign, KeyPair
from harness.registry import RegistryServer
from tests.integration.conftest import MakeClient, plain_http_policy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cosign(tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    """The pinned cosign CLI (built first when missing) in a throwaway home."""
    return Cosign(tmp_path_factory.mktemp("cosign"))


@pytest.fixture(scope="session")
def release_keys(cosign: Cosign) -> KeyPair:
    return cosign.generate_key_pair("release")


@pytest.fixture(scope="session")
def stranger_keys(cosign: Cosign) -> KeyPair:
    return cosign.generate_key_pair("stranger")


def keyset(*pairs: tuple[str, KeyPair], log: str | None = None) -> KeySet:
    return KeySet(
        keys=tuple(parse_public_key(name, pair.public_pem) for name, pair in pairs),
        log_keys=(parse_public_key("test-log", log),) if log else (),
    )


def reference(server: RegistryServer, repo: str, digest: str) -> str:
    return f"{server.host}/{repo}@{digest}"


def kit_ref(server: RegistryServer, repo: str) -> refs.Reference:
    return refs.parse(f"{server.host}/{repo}:v1", grammar="kit")


async def check(
    make_client: MakeClient, server: RegistryServer, repo: str, digest: str, keys: KeySet
) -> object:
    client = make_client(plain_http_policy(server))
    return await Verifier(client).verify(kit_ref(server, repo), digest, keys)


# -- each way cosign stores a signature -----------------------------------------------------------


async def test_cosign_version_is_the_pinned_one(cosign: Cosign) -> None:
    from harness import tools

    assert cosign.version() == tools.versions()["COSIGN_VERSION"]


async def test_a_sig_tag_signature_verifies_naming_the_key(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    cosign.sign(reference(plain_registry, repo, digest), release_keys)
    tag = digest.replace(":", "-") + ".sig"
    assert plain_registry.count_manifest_requests(repo, tag, method="PUT", status=201) == 1

    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys))
    )
    assert isinstance(outcome, Verified), outcome
    assert outcome.key == "release"
    assert outcome.where == f"tag {tag} layer 0"
    assert outcome.log == "absent"
    assert plain_registry.count_manifest_requests(repo, tag, status=200) == 1

    crosscheck = cosign.verify(reference(plain_registry, repo, digest), release_keys.pub)
    assert crosscheck.returncode == 0, crosscheck.stderr


async def test_a_new_bundle_format_referrer_verifies_through_the_tag_schema(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    cosign.sign(
        reference(plain_registry, repo, digest), release_keys, options=["--new-bundle-format"]
    )
    fallback = digest.replace(":", "-")
    assert plain_registry.count_manifest_requests(repo, fallback, method="PUT", status=201) == 1

    referrers_path = f"/v2/{repo}/referrers/{digest}"
    asked = plain_registry.count_requests("GET", referrers_path, status=404)  # cosign's own
    read = plain_registry.count_manifest_requests(repo, fallback, status=200)
    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys))
    )
    assert isinstance(outcome, Verified), outcome
    assert outcome.key == "release"
    assert outcome.where.startswith("referrer sha256:")
    # no referrers API in distribution: a 404, then the tag schema
    assert plain_registry.count_requests("GET", referrers_path, status=404) == asked + 1
    assert plain_registry.count_manifest_requests(repo, fallback, status=200) == read + 1

    crosscheck = cosign.verify(
        reference(plain_registry, repo, digest),
        release_keys.pub,
        options=[
            "--insecure-ignore-tlog=true",
            "--trusted-root",
            str(cosign.minimal_trusted_root()),
        ],
    )
    assert crosscheck.returncode == 0, crosscheck.stderr


async def test_an_oci_1_1_referrer_signature_verifies(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    experimental = {"COSIGN_EXPERIMENTAL": "1"}
    cosign.sign(
        reference(plain_registry, repo, digest),
        release_keys,
        options=["--registry-referrers-mode=oci-1-1"],
        env=experimental,
    )
    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys))
    )
    assert isinstance(outcome, Verified), outcome
    assert outcome.where.startswith("referrer sha256:")

    crosscheck = cosign.verify(
        reference(plain_registry, repo, digest),
        release_keys.pub,
        options=["--insecure-ignore-tlog=true", "--experimental-oci11"],
        env=experimental,
    )
    assert crosscheck.returncode == 0, crosscheck.stderr


def pkcs8(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_rsa_and_ed25519_keys_imported_into_cosign_verify(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    kind: str,
) -> None:
    """cosign 2.x signs with an Ed25519 key as Ed25519ph but its ``verify --key`` checks pure
    Ed25519 (so it refuses its own signature); kitpin accepts both, and the cross-check is
    made for RSA only."""
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    pair = cosign.import_key_pair(pkcs8(private), f"imported-{kind}-{repo.rsplit('-', 1)[1]}")
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    cosign.sign(reference(plain_registry, repo, digest), pair)
    for options in ([], ["--new-bundle-format"]):
        if options:
            cosign.sign(reference(plain_registry, repo, digest), pair, options=options)
        outcome = await check(make_client, plain_registry, repo, digest, keyset((kind, pair)))
        assert isinstance(outcome, Verified), outcome
        assert outcome.key == kind
    if kind == "rsa":
        crosscheck = cosign.verify(
            reference(plain_registry, repo, digest),
            pair.pub,
            options=[
                "--insecure-ignore-tlog=true",
                "--trusted-root",
                str(cosign.minimal_trusted_root()),
            ],
        )
        assert crosscheck.returncode == 0, crosscheck.stderr


# -- missing and invalid --------------------------------------------------------------------------


async def test_unsigned_is_missing(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys))
    )
    assert isinstance(outcome, SignatureMissing), outcome
    assert "cosign sign --key" in outcome.message
    assert cosign.verify(reference(plain_registry, repo, digest), release_keys.pub).returncode != 0


async def test_signed_by_another_key_is_invalid(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
    stranger_keys: KeyPair,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    cosign.sign(reference(plain_registry, repo, digest), stranger_keys)
    cosign.sign(
        reference(plain_registry, repo, digest), stranger_keys, options=["--new-bundle-format"]
    )
    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys))
    )
    assert isinstance(outcome, SignatureInvalid), outcome
    assert len(outcome.problems) == 2
    assert all("does not verify with any of the keys (release)" in p for p in outcome.problems)
    assert cosign.verify(reference(plain_registry, repo, digest), release_keys.pub).returncode != 0
    # the stranger's key, listed too, verifies it
    both = keyset(("release", release_keys), ("stranger", stranger_keys))
    outcome = await check(make_client, plain_registry, repo, digest, both)
    assert isinstance(outcome, Verified) and outcome.key == "stranger"


async def test_a_signature_copied_onto_another_digests_sig_tag_is_invalid(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    signed = modelkit.push_modelkit(plain_registry, repo, "v1", seed=1)
    target = modelkit.push_modelkit(plain_registry, repo, "v2", seed=2)
    cosign.sign(reference(plain_registry, repo, signed), release_keys)
    modelkit.tag(
        plain_registry,
        repo,
        signed.replace(":", "-") + ".sig",
        target.replace(":", "-") + ".sig",
    )
    outcome = await check(
        make_client, plain_registry, repo, target, keyset(("release", release_keys))
    )
    assert isinstance(outcome, SignatureInvalid), outcome
    assert f"its payload names {signed}, not this digest" in outcome.problems[0]
    crosscheck = cosign.verify(reference(plain_registry, repo, target), release_keys.pub)
    assert crosscheck.returncode != 0


async def test_a_registry_that_is_down_is_unavailable(
    tmp_path: Path,
    registry_binary: Path,
    make_client: MakeClient,
    cosign: Cosign,
    release_keys: KeyPair,
) -> None:
    with RegistryServer(workdir=tmp_path / "registry", binary=registry_binary) as server:
        digest = modelkit.push_modelkit(server, "it/down", "v1")
        cosign.sign(reference(server, "it/down", digest), release_keys)
        server.stop()
        outcome = await check(
            make_client, server, "it/down", digest, keyset(("release", release_keys))
        )
        assert isinstance(outcome, SignatureUnavailable), outcome
        assert outcome.error_reason == "Unreachable"
        assert "try again" in outcome.message
        server.start()
        outcome = await check(
            make_client, server, "it/down", digest, keyset(("release", release_keys))
        )
        assert isinstance(outcome, Verified), outcome


# -- a transparency-log entry, verified offline ---------------------------------------------------


@pytest.fixture(scope="session")
def test_log() -> Iterator[ec.EllipticCurvePrivateKey]:
    yield ec.generate_private_key(ec.SECP256R1())


def log_entry(
    log: ec.EllipticCurvePrivateKey, payload: bytes, signature_b64: str, public_pem: str
) -> dict[str, object]:
    """A Rekor ``hashedrekord`` entry and its signed entry timestamp, as Rekor makes them."""
    der = log.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {
                    "hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
                },
                "signature": {
                    "content": signature_b64,
                    "publicKey": {"content": base64.b64encode(public_pem.encode()).decode()},
                },
            },
        },
        separators=(",", ":"),
    ).encode()
    promised = {
        "body": base64.b64encode(body).decode(),
        "integratedTime": 1_750_000_000,
        "logID": hashlib.sha256(der).hexdigest(),
        "logIndex": 4242,
    }
    canonical = json.dumps(promised, sort_keys=True, separators=(",", ":")).encode()
    promise = log.sign(canonical, ec.ECDSA(hashes.SHA256()))
    return {"SignedEntryTimestamp": base64.b64encode(promise).decode(), "Payload": promised}


async def test_a_log_entry_verifies_offline_with_the_log_key(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    cosign: Cosign,
    release_keys: KeyPair,
    test_log: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    digest = modelkit.push_modelkit(plain_registry, repo, "v1")
    image = reference(plain_registry, repo, digest)
    signature, payload = tmp_path / "signature", tmp_path / "payload"
    cosign.sign(
        image,
        release_keys,
        options=[
            "--upload=false",
            f"--output-signature={signature}",
            f"--output-payload={payload}",
        ],
    )
    entry = log_entry(
        test_log, payload.read_bytes(), signature.read_text(), release_keys.public_pem
    )
    response = tmp_path / "rekor-response.json"
    response.write_text(
        json.dumps({"base64Signature": signature.read_text(), "rekorBundle": entry})
    )
    cosign.run(
        "attach",
        "signature",
        "--signature",
        str(signature),
        "--payload",
        str(payload),
        "--rekor-response",
        str(response),
        "--allow-insecure-registry",
        image,
    )
    log_pem = (
        test_log.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    keys = keyset(("release", release_keys), log=log_pem)
    outcome = await check(make_client, plain_registry, repo, digest, keys)
    assert isinstance(outcome, Verified), outcome
    assert outcome.log == "verified"

    other_log = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    outcome = await check(
        make_client, plain_registry, repo, digest, keyset(("release", release_keys), log=other_log)
    )
    assert isinstance(outcome, SignatureInvalid), outcome
    assert "not one of the configured log keys" in outcome.problems[0]

    log_file = tmp_path / "log.pub"
    log_file.write_text(log_pem)
    crosscheck = cosign.verify(
        image,
        release_keys.pub,
        options=["--offline=true"],
        env={"SIGSTORE_REKOR_PUBLIC_KEY": str(log_file)},
    )
    assert crosscheck.returncode == 0, crosscheck.stderr
    assert "transparency log was verified offline" in crosscheck.stderr + crosscheck.stdout
