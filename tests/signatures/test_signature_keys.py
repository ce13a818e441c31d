"""Parsing verification keys (errors name the field) and checking signatures with each key
type the way cosign signs: ECDSA P-256, RSA PKCS #1 v1.5, Ed25519ph and pure Ed25519."""

from __future__ import annotations

import pytest
from cosign_fakes import Signer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controller import errors
from controller.signatures import KeySet, SignatureKeyError, parse_keys, parse_public_key


@pytest.mark.parametrize("kind", ["ecdsa", "rsa", "ed25519", "ed25519-pure"])
def test_each_key_type_verifies_what_it_signed_and_nothing_else(kind: str) -> None:
    signer = Signer.make(kind)  # type: ignore[arg-type]
    key = parse_public_key("release", signer.public_pem)
    signature = signer.sign(b"payload")
    assert key.verify(signature, b"payload")
    assert not key.verify(signature, b"payload!")
    assert not key.verify(b"\x00" * len(signature), b"payload")
    assert not key.verify(b"", b"payload")
    other = parse_public_key("other", Signer.make(kind).public_pem)  # type: ignore[arg-type]
    assert not other.verify(signature, b"payload")


def test_algorithms_and_fingerprints() -> None:
    keys = parse_keys(
        [
            {"name": "ec", "publicKey": Signer.make("ecdsa").public_pem},
            {"name": "rsa", "publicKey": Signer.make("rsa").public_pem},
            {"name": "ed", "publicKey": Signer.make("ed25519").public_pem},
        ]
    )
    assert [k.algorithm for k in keys] == ["ecdsa-p256", "rsa", "ed25519"]
    assert len({k.fingerprint for k in keys}) == 3


def test_a_key_set_fingerprint_follows_names_keys_and_log_settings() -> None:
    pem = Signer.make().public_pem
    log = parse_public_key("log", Signer.make().public_pem)
    one = KeySet(keys=(parse_public_key("a", pem),))
    assert one.fingerprint == KeySet(keys=(parse_public_key("a", pem),)).fingerprint
    assert one.fingerprint != KeySet(keys=(parse_public_key("b", pem),)).fingerprint
    with_log = KeySet(keys=one.keys, log_keys=(log,))
    assert with_log.fingerprint != one.fingerprint
    assert (
        KeySet(keys=one.keys, log_keys=(log,), require_log_entry=True).fingerprint
        != with_log.fingerprint
    )


def pem_of(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize(
    ("items", "field", "says"),
    [
        ("nope", "keys", "not a list"),
        ([], "keys", "is empty"),
        ([{"name": "a"}], "keys[0].publicKey", "expected the PEM"),
        ([{"publicKey": "x"}], "keys[0].name", "non-empty name"),
        ([{"name": "a", "publicKey": "x", "secret": "s"}], "keys[0]", "unknown fields secret"),
        ([{"name": "a", "publicKey": "hello"}], "keys[0].publicKey", "no -----BEGIN PUBLIC KEY"),
        (
            [
                {
                    "name": "a",
                    "publicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                }
            ],
            "keys[0].publicKey",
            "not a PEM public key kitpin can read",
        ),
        (
            [{"name": "a", "publicKey": "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n"}],
            "keys[0].publicKey",
            "holds a private key",
        ),
        (
            [
                {
                    "name": "a",
                    "publicKey": pem_of(ec.generate_private_key(ec.SECP384R1()).public_key()),
                }
            ],
            "keys[0].publicKey",
            "secp384r1",
        ),
        (
            [
                {
                    "name": "a",
                    "publicKey": pem_of(
                        rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
                    ),
                }
            ],
            "keys[0].publicKey",
            "1024-bit RSA",
        ),
        ([{"name": "a", "publicKey": "x" * 20000}], "keys[0].publicKey", "more than 16384"),
        ("x", "keys", "not a list"),
        ([{"name": 1, "publicKey": "x"}], "keys[0].name", "non-empty name"),
        ([3], "keys[0]", "not an object"),
    ],
)
def test_malformed_keys_name_the_field(items: object, field: str, says: str) -> None:
    with pytest.raises(SignatureKeyError) as caught:
        parse_keys(items)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert says in caught.value.message
    assert isinstance(caught.value, errors.ConfigError)


def test_duplicate_names_are_refused() -> None:
    pem = Signer.make().public_pem
    with pytest.raises(SignatureKeyError) as caught:
        parse_keys([{"name": "a", "publicKey": pem}, {"name": "a", "publicKey": pem}])
    assert caught.value.field == "keys[1].name"
    assert "keys[0]" in caught.value.message


def test_a_secret_key_is_parsed_with_the_field_the_caller_names() -> None:
    with pytest.raises(SignatureKeyError) as caught:
        parse_public_key("a", b"junk", field="secret team/cosign key cosign.pub")
    assert caught.value.field == "secret team/cosign key cosign.pub"


def test_a_key_set_needs_keys_and_a_log_key_when_log_entries_are_required() -> None:
    with pytest.raises(SignatureKeyError):
        KeySet(keys=())
    key = parse_public_key("a", Signer.make().public_pem)
    with pytest.raises(SignatureKeyError) as caught:
        KeySet(keys=(key,), require_log_entry=True)
    assert caught.value.field == "requireLogEntry"


def test_importing_the_package_loads_no_crypto_library() -> None:
    """The libraries load when a key is parsed: a kitpin with no keys never pays for them
    (a fresh interpreter, this one has them already)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import controller.signatures\n"
        "assert 'cryptography' not in sys.modules, 'cryptography'\n"
        "assert 'Crypto' not in sys.modules, 'pycryptodome'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
