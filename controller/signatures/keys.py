"""Verification keys: parsing the PEM a policy lists, and checking a signature with one. Pure.

kitpin checks what ``cosign sign --key`` makes, with cosign's conventions for each key type:

==========  ===========================================================================
ECDSA P-256 (``cosign generate-key-pair``'s keys) ASN.1 DER signature over SHA-256
RSA         (2048 bits or more) PKCS #1 v1.5 over SHA-256
Ed25519     Ed25519ph (SHA-512 pre-hash, what cosign 2.x signs with) or pure Ed25519
            (older cosign); the two are domain-separated, so accepting either is safe
==========  ===========================================================================

A key is given as a PEM ``PUBLIC KEY`` block (``cosign.pub``), inline in a policy
(:func:`parse_keys`: a list of ``{name, publicKey}``) or read from a Secret by the caller
(:func:`parse_public_key`). Every error is a :class:`~.model.SignatureKeyError` naming the
field. :class:`KeySet` is what the verifier takes: the keys, the transparency-log keys and
whether a log entry is required; its :attr:`KeySet.fingerprint` keys the verifier's cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal

from controller import types
from controller.signatures.model import SignatureKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# The crypto libraries (cryptography, pycryptodome) are imported when a key is parsed or
# used, not with this module: a kitpin whose policies list no keys never loads them (the
# operator imports no cryptography, tests/kubeapi checks it).

__all__ = [
    "MAX_KEYS",
    "MAX_PEM_BYTES",
    "KeyAlgorithm",
    "KeySet",
    "PublicKey",
    "der_of_pem",
    "parse_keys",
    "parse_public_key",
]

KeyAlgorithm = Literal["ecdsa-p256", "rsa", "ed25519"]

MAX_KEYS: Final = 32
"""Keys in one list at most: each signature is tried with each key."""
MAX_PEM_BYTES: Final = 16 * 1024
"""A public key PEM is under 1 KiB (RSA 4096: ~800 bytes); more is not a key."""
MAX_NAME_LENGTH: Final = 253
MIN_RSA_BITS: Final = 2048


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """A parsed verification key. Build it with :func:`parse_public_key`."""

    name: str
    """The name a verified outcome reports (the policy's ``keys[].name``)."""
    algorithm: KeyAlgorithm
    der: bytes = field(repr=False)
    """The key's SubjectPublicKeyInfo, DER: what the fingerprint and log entries compare."""
    loaded: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey = field(
        repr=False, compare=False, hash=False
    )

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of :attr:`der`, hex (for a transparency-log key, its log ID)."""
        return hashlib.sha256(self.der).hexdigest()

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``message`` (cosign's
        conventions, see the module docstring). Never raises on a bad signature."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

        key = self.loaded
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                return True
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                return True
        except (InvalidSignature, ValueError):
            return False
        return self._verify_ed25519(signature, message)

    def _verify_ed25519(self, signature: bytes, message: bytes) -> bool:
        from Crypto.Hash import SHA512
        from Crypto.PublicKey import ECC
        from Crypto.Signature import eddsa

        if len(signature) != 64:
            return False
        verifier = eddsa.new(ECC.import_key(self.der), "rfc8032")
        for signed in (SHA512.new(message), message):  # Ed25519ph, then pure Ed25519
            try:
                verifier.verify(signed, signature)
                return True
            except ValueError:
                continue
        return False


@dataclass(frozen=True, kw_only=True)
class KeySet:
    """What a signature must verify with: the keys, and what to make of transparency-log
    entries. Equal key sets (same keys by name and content, same log settings) have the same
    :attr:`fingerprint`."""

    keys: tuple[PublicKey, ...]
    log_keys: tuple[PublicKey, ...] = ()
    """Transparency-log (Rekor) public keys. When set, a signature's log entry is verified
    offline against them (its signed entry timestamp, and that it records this signature,
    payload and key); a signature whose entry does not verify does not count. Unset: entries
    are not checked (a key-signed signature does not need a log)."""
    require_log_entry: bool = False
    """Also refuse signatures that carry no log entry (needs ``log_keys``)."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise SignatureKeyError("no keys: list at least one public key", field="keys")
        if self.require_log_entry and not self.log_keys:
            raise SignatureKeyError(
                "a log entry is required but no transparency-log key is configured; add the "
                "log's public key, or stop requiring log entries",
                field="requireLogEntry",
            )

    @cached_property
    def fingerprint(self) -> str:
        """A digest of everything that decides an outcome (the verifier's cache key)."""
        h = hashlib.sha256()
        for key in self.keys:
            h.update(f"key\0{key.name}\0{key.fingerprint}\n".encode())
        for key in self.log_keys:
            h.update(f"log\0{key.fingerprint}\n".encode())
        h.update(b"require-log\n" if self.require_log_entry else b"\n")
        return h.hexdigest()

    @property
    def names(self) -> str:
        """The keys' names, for messages: ``release, ci``."""
        return ", ".join(key.name for key in self.keys)


def parse_public_key(name: str, pem: str | bytes, *, field: str = "publicKey") -> PublicKey:
    """The key in the PEM ``PUBLIC KEY`` block ``pem``, named ``name``. Raises
    :class:`SignatureKeyError` naming ``field`` when it is not one kitpin verifies with."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    text = pem.encode() if isinstance(pem, str) else pem
    if len(text) > MAX_PEM_BYTES:
        raise SignatureKeyError(
            f"is {len(text)} bytes, more than {MAX_PEM_BYTES}; a public key PEM is under 1 KiB. "
            "Give the PEM of the public key (cosign.pub)",
            field=field,
        )
    if b"PRIVATE KEY" in text:
        raise SignatureKeyError(
            "holds a private key; give the public key (cosign.pub, or `cosign public-key "
            "--key cosign.key`) and keep the private key out of the cluster",
            field=field,
        )
    if b"-----BEGIN " not in text:
        raise SignatureKeyError(
            "is not a PEM public key (no -----BEGIN PUBLIC KEY----- line); give the content "
            "of cosign.pub",
            field=field,
        )
    try:
        loaded = serialization.load_pem_public_key(text)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SignatureKeyError(
            f"is not a PEM public key kitpin can read ({_first_line(e)}); give the content of "
            "cosign.pub, a -----BEGIN PUBLIC KEY----- block",
            field=field,
        ) from None
    algorithm: KeyAlgorithm
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        if not isinstance(loaded.curve, ec.SECP256R1):
            raise SignatureKeyError(
                f"is an ECDSA key on {loaded.curve.name}; kitpin verifies ECDSA P-256 "
                "(cosign's default, `cosign generate-key-pair`), RSA and Ed25519 keys",
                field=field,
            )
        algorithm = "ecdsa-p256"
    elif isinstance(loaded, rsa.RSAPublicKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise SignatureKeyError(
                f"is a {loaded.key_size}-bit RSA key; kitpin accepts RSA keys of "
                f"{MIN_RSA_BITS} bits or more",
                field=field,
            )
        algorithm = "rsa"
    elif isinstance(loaded, ed25519.Ed25519PublicKey):
        algorithm = "ed25519"
    else:
        raise SignatureKeyError(
            f"is a {type(loaded).__name__.removesuffix('PublicKey') or 'non-signing'} key; "
            "kitpin verifies ECDSA P-256, RSA and Ed25519 keys",
            field=field,
        )
    der = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(name=name, algorithm=algorithm, der=der, loaded=loaded)


def parse_keys(items: object, *, field: str = "keys") -> tuple[PublicKey, ...]:
    """The keys of a policy's inline list ``[{name, publicKey}, ...]``: 1 to
    :data:`MAX_KEYS`, names unique. Errors name the field (``keys[1].publicKey``). A key kept
    in a Secret is read by the caller and parsed with :func:`parse_public_key`."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise SignatureKeyError(
            f"is {types.json_type(items)}, not a list of {{name, publicKey}}", field=field
        )
    if not items:
        raise SignatureKeyError("is empty; list at least one {name, publicKey}", field=field)
    if len(items) > MAX_KEYS:
        raise SignatureKeyError(
            f"lists {len(items)} keys, more than {MAX_KEYS}; each signature is tried with each key",
            field=field,
        )
    keys: list[PublicKey] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise SignatureKeyError(
                f"is {types.json_type(item)}, not an object {{name, publicKey}}", field=where
            )
        unknown = sorted(str(k) for k in item if k not in ("name", "publicKey"))
        if unknown:
            raise SignatureKeyError(
                f"has unknown fields {', '.join(unknown)}; a key is {{name, publicKey}}",
                field=where,
            )
        name = _name(item.get("name"), field=f"{where}.name")
        if name in seen:
            raise SignatureKeyError(
                f"{name!r} is also the name of {field}[{seen[name]}]; names must be unique "
                "(a verified outcome reports the name)",
                field=f"{where}.name",
            )
        seen[name] = index
        pem = item.get("publicKey")
        if not isinstance(pem, str):
            raise SignatureKeyError(
                f"is {types.json_type(pem)}, expected the PEM of the public key (cosign.pub)",
                field=f"{where}.publicKey",
            )
        keys.append(parse_public_key(name, pem, field=f"{where}.publicKey"))
    return tuple(keys)


def der_of_pem(pem: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo DER of the public key PEM ``pem``, or None when it is not one
    (comparing the key a transparency-log entry records)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        loaded = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SignatureKeyError(
            f"is {types.json_type(value)}, expected a non-empty name (reported when the key "
            "verifies a signature)",
            field=field,
        )
    if len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise SignatureKeyError(f"must be 1 to {MAX_NAME_LENGTH} printable characters", field=field)
    return value


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else type(e).__name__
