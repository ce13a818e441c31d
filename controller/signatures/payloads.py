"""What cosign stores, and reading it: simple-signing payloads, sigstore bundles, DSSE and
in-toto statements, the Rekor entries they carry. Pure.

Where cosign puts a signature of ``repo@sha256:<hex>`` (all in ``repo``):

- the tag ``sha256-<hex>.sig`` (cosign's default): an image manifest whose layers each hold
  one signature, ``mediaType`` :data:`SIMPLE_SIGNING`, the layer's bytes the simple-signing
  payload and the annotation :data:`SIGNATURE_ANNOTATION` the base64 signature over exactly
  those bytes; :data:`REKOR_BUNDLE_ANNOTATION` the log entry when one was made;
- an OCI 1.1 referrer (a manifest whose ``subject`` is the digest), listed by the referrers
  API or, on a registry without it, in the index tagged ``sha256-<hex>``:
  ``cosign sign --new-bundle-format`` makes one of ``artifactType``
  :data:`BUNDLE_V03` holding a sigstore bundle (a DSSE envelope over an in-toto statement
  whose subject is the digest, predicate type :data:`COSIGN_SIGN_PREDICATE`);
  ``--registry-referrers-mode=oci-1-1`` one of ``artifactType`` :data:`COSIGN_SIG_ARTIFACT`
  holding simple-signing layers as above.

Every reader raises :class:`PayloadError` (a ``ValueError``) with a message fit for a list
of problems; JSON is decoded by :mod:`controller.jsonlimits`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from controller import jsonlimits, types

__all__ = [
    "BUNDLE_MEDIA_TYPES",
    "BUNDLE_PREDICATE_ANNOTATION",
    "BUNDLE_V03",
    "COSIGN_SIGN_PREDICATE",
    "COSIGN_SIG_ARTIFACT",
    "IN_TOTO_PAYLOAD_TYPE",
    "REKOR_BUNDLE_ANNOTATION",
    "SIGNATURE_ANNOTATION",
    "SIGNATURE_ARTIFACT_TYPES",
    "SIMPLE_SIGNING",
    "Bundle",
    "PayloadError",
    "b64decode",
    "pae",
    "parse_bundle",
    "simple_signing_digest",
    "statement",
]

SIMPLE_SIGNING: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
REKOR_BUNDLE_ANNOTATION: Final = "dev.sigstore.cosign/bundle"
COSIGN_SIG_ARTIFACT: Final = "application/vnd.dev.cosign.artifact.sig.v1+json"
BUNDLE_V03: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES: Final = frozenset(
    {
        BUNDLE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
SIGNATURE_ARTIFACT_TYPES: Final = BUNDLE_MEDIA_TYPES | {COSIGN_SIG_ARTIFACT}
"""The ``artifactType`` of the referrers kitpin reads (others: attestations, SBOMs, ...)."""
BUNDLE_PREDICATE_ANNOTATION: Final = "dev.sigstore.bundle.predicateType"
COSIGN_SIGN_PREDICATE: Final = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
_IN_TOTO_TYPES: Final = frozenset(
    {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
)
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


class PayloadError(ValueError):
    """What cosign stored cannot be read; the message says what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Bundle:
    """The parts of a sigstore bundle (DSSE content) that a key-based check reads."""

    media_type: str
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]
    tlog_entries: tuple[Mapping[str, object], ...]
    """``verificationMaterial.tlogEntries``, as decoded (read by :mod:`.tlog`)."""


def b64decode(value: object, what: str) -> bytes:
    """``value``, a base64 string (standard or URL-safe alphabet, padded or not), decoded."""
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{what} is {types.json_type(value)}, not base64 text")
    text = value.strip()
    alphabet = text.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(alphabet + "=" * (-len(alphabet) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{what} is not valid base64") from None


def _json(data: bytes, what: str) -> Mapping[str, object]:
    try:
        document = jsonlimits.loads(data)
    except jsonlimits.DecodeError as e:
        raise PayloadError(f"{what} is not JSON kitpin accepts ({e})") from None
    if not isinstance(document, dict):
        raise PayloadError(f"{what} is {types.json_type(document)}, not a JSON object")
    return document


def _object(parent: Mapping[str, object], key: str, what: str) -> Mapping[str, object]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"{what}.{key} is {types.json_type(value)}, not an object")
    return value


def simple_signing_digest(payload: bytes) -> str:
    """The digest a simple-signing payload names, ``critical.image.docker-manifest-digest``."""
    document = _json(payload, "the simple-signing payload")
    critical = _object(document, "critical", "the payload")
    image = _object(critical, "image", "the payload's critical")
    digest = image.get("docker-manifest-digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise PayloadError(
            "the payload's critical.image.docker-manifest-digest is "
            f"{types.json_type(digest) if not isinstance(digest, str) else repr(digest[:80])}, "
            "not a sha256 digest"
        )
    return digest


def parse_bundle(data: bytes) -> Bundle:
    """The DSSE envelope and log entries of the sigstore bundle ``data`` (JSON)."""
    document = _json(data, "the sigstore bundle")
    media_type = document.get("mediaType")
    if not isinstance(media_type, str) or media_type not in BUNDLE_MEDIA_TYPES:
        raise PayloadError(
            f"the bundle's mediaType is {types.json_type(media_type)}"
            f"{' ' + repr(media_type[:80]) if isinstance(media_type, str) else ''}, not a "
            "sigstore bundle kitpin reads (v0.1 to v0.3)"
        )
    if "dsseEnvelope" not in document:
        if "messageSignature" in document:
            raise PayloadError(
                "the bundle holds a message signature (`cosign sign-blob`), not the DSSE "
                "envelope `cosign sign --new-bundle-format` makes for an image"
            )
        raise PayloadError("the bundle has no dsseEnvelope")
    envelope = _object(document, "dsseEnvelope", "the bundle")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise PayloadError(
            f"the bundle's dsseEnvelope.payloadType is {types.json_type(payload_type)}"
        )
    payload = b64decode(envelope.get("payload"), "the bundle's dsseEnvelope.payload")
    raw_signatures = envelope.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise PayloadError("the bundle's dsseEnvelope.signatures is not a non-empty list")
    signatures = tuple(
        b64decode(
            item.get("sig") if isinstance(item, dict) else None,
            f"the bundle's dsseEnvelope.signatures[{i}].sig",
        )
        for i, item in enumerate(raw_signatures[:8])
    )
    material = document.get("verificationMaterial")
    entries: tuple[Mapping[str, object], ...] = ()
    if isinstance(material, dict):
        raw_entries = material.get("tlogEntries")
        if isinstance(raw_entries, list):
            entries = tuple(e for e in raw_entries[:8] if isinstance(e, dict))
    return Bundle(
        media_type=media_type,
        payload_type=payload_type,
        payload=payload,
        signatures=signatures,
        tlog_entries=entries,
    )


def statement(bundle: Bundle) -> tuple[str, tuple[str, ...]]:
    """The predicate type and the sha256 subject digests (``sha256:<hex>``) of the in-toto
    statement a bundle's envelope carries."""
    if bundle.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise PayloadError(
            f"the envelope's payloadType is {bundle.payload_type[:80]!r}, not "
            f"{IN_TOTO_PAYLOAD_TYPE}"
        )
    document = _json(bundle.payload, "the in-toto statement")
    kind = document.get("_type")
    if kind not in _IN_TOTO_TYPES:
        raise PayloadError(f"the statement's _type is {types.json_type(kind)}, not in-toto's")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str):
        raise PayloadError(f"the statement's predicateType is {types.json_type(predicate_type)}")
    subjects = document.get("subject")
    if not isinstance(subjects, list):
        raise PayloadError(f"the statement's subject is {types.json_type(subjects)}, not a list")
    digests: list[str] = []
    for subject in subjects[:64]:
        if not isinstance(subject, dict):
            continue
        digest = subject.get("digest")
        if isinstance(digest, dict):
            value = digest.get("sha256")
            if isinstance(value, str) and _SHA256_HEX.fullmatch(value):
                digests.append(f"sha256:{value}")
    return predicate_type, tuple(digests)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a DSSE signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
