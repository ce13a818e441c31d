"""Transparency-log (Rekor) entries of a signature, verified offline. Pure.

A signature uploaded to Rekor carries its entry: cosign's ``.sig`` layers in the annotation
``dev.sigstore.cosign/bundle`` (``{"SignedEntryTimestamp", "Payload": {"body",
"integratedTime", "logIndex", "logID"}}``), a sigstore bundle in
``verificationMaterial.tlogEntries`` (``canonicalizedBody``, ``inclusionPromise``, ...).

:func:`check` verifies one entry against the configured log keys, as ``cosign verify``
does offline with its Rekor keys:

1. the log that issued it (``logID``: sha256 of the log's public key) is a configured one;
2. its signed entry timestamp (SET, Rekor's promise to include the entry) verifies with
   that log's key over the canonical JSON of ``{body, integratedTime, logID, logIndex}``;
3. the body records this very signature: for a ``hashedrekord`` the sha256 of the payload,
   the signature and the key; for a ``dsse`` entry the payload's sha256, the signature and
   the key (the verifier).

Inclusion proofs against a checkpoint (Rekor v2 entries carry no SET) are not verified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from controller import jsonlimits, types
from controller.signatures import payloads
from controller.signatures.keys import PublicKey, der_of_pem

__all__ = ["LogEntry", "check", "from_annotation", "from_bundle_entry"]

_DIGITS: Final = re.compile(r"[0-9]{1,19}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One transparency-log entry as a signature carries it."""

    body: bytes
    """The canonicalized entry body (JSON), decoded from base64."""
    integrated_time: int
    log_index: int
    log_id: str
    """Hex sha256 of the log's public key (DER)."""
    signed_entry_timestamp: bytes | None


def _integer(value: object, what: str) -> int:
    if types.is_int(value) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise payloads.PayloadError(f"{what} is {types.json_type(value)}, not a non-negative integer")


def from_annotation(text: str) -> LogEntry:
    """The entry in a ``.sig`` layer's ``dev.sigstore.cosign/bundle`` annotation."""
    try:
        document = jsonlimits.loads(text)
    except jsonlimits.DecodeError as e:
        raise payloads.PayloadError(f"the log entry annotation is not JSON ({e})") from None
    if not isinstance(document, dict) or not isinstance(document.get("Payload"), dict):
        raise payloads.PayloadError("the log entry annotation has no Payload object")
    payload: Mapping[str, object] = document["Payload"]
    log_id = payload.get("logID")
    if not isinstance(log_id, str) or not _HEX64.fullmatch(log_id):
        raise payloads.PayloadError("the log entry's logID is not 64 hex digits")
    promise = document.get("SignedEntryTimestamp")
    return LogEntry(
        body=payloads.b64decode(payload.get("body"), "the log entry's body"),
        integrated_time=_integer(payload.get("integratedTime"), "the log entry's integratedTime"),
        log_index=_integer(payload.get("logIndex"), "the log entry's logIndex"),
        log_id=log_id,
        signed_entry_timestamp=(
            payloads.b64decode(promise, "the log entry's SignedEntryTimestamp") if promise else None
        ),
    )


def from_bundle_entry(entry: Mapping[str, object]) -> LogEntry:
    """An entry of a sigstore bundle's ``verificationMaterial.tlogEntries``."""
    log_id = entry.get("logId")
    key_id = payloads.b64decode(
        log_id.get("keyId") if isinstance(log_id, dict) else None, "the log entry's logId.keyId"
    )
    promise = entry.get("inclusionPromise")
    signed = promise.get("signedEntryTimestamp") if isinstance(promise, dict) else None
    return LogEntry(
        body=payloads.b64decode(entry.get("canonicalizedBody"), "the log entry's body"),
        integrated_time=_integer(entry.get("integratedTime"), "the log entry's integratedTime"),
        log_index=_integer(entry.get("logIndex"), "the log entry's logIndex"),
        log_id=key_id.hex(),
        signed_entry_timestamp=(
            payloads.b64decode(signed, "the log entry's signedEntryTimestamp") if signed else None
        ),
    )


def check(
    entry: LogEntry,
    log_keys: tuple[PublicKey, ...],
    *,
    payload: bytes,
    signature: bytes,
    key: PublicKey,
) -> str | None:
    """None when ``entry`` verifies (see the module docstring) for ``signature`` by ``key``
    over ``payload`` (the simple-signing payload, or the DSSE payload); else the problem."""
    log = next((k for k in log_keys if k.fingerprint == entry.log_id), None)
    if log is None:
        return (
            f"its transparency-log entry is from the log {entry.log_id[:16]}…, not one of the "
            "configured log keys; add that log's public key, or sign with the configured log"
        )
    if entry.signed_entry_timestamp is None:
        return (
            "its transparency-log entry has no signed entry timestamp (inclusion promise), "
            "which is what kitpin verifies offline"
        )
    promised = json.dumps(
        {
            "body": _b64(entry.body),
            "integratedTime": entry.integrated_time,
            "logID": entry.log_id,
            "logIndex": entry.log_index,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if not log.verify(entry.signed_entry_timestamp, promised):
        return (
            "its transparency-log entry's signed entry timestamp does not verify with the "
            f"log key {log.name!r}: the entry was altered or not issued by that log"
        )
    problem = _body_problem(entry.body, payload=payload, signature=signature, key=key)
    if problem is not None:
        return f"its transparency-log entry {problem}"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _body_problem(body: bytes, *, payload: bytes, signature: bytes, key: PublicKey) -> str | None:
    try:
        document = jsonlimits.loads(body)
    except jsonlimits.DecodeError:
        return "has a body that is not JSON"
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        return "has a body without a spec"
    kind, version = document.get("kind"), document.get("apiVersion")
    spec: Mapping[str, object] = document["spec"]
    payload_hash = hashlib.sha256(payload).hexdigest()
    try:
        if (kind, version) == ("hashedrekord", "0.0.1"):
            data = _obj(_obj(spec, "data"), "hash")
            if data.get("algorithm") != "sha256" or data.get("value") != payload_hash:
                return "records another payload (its hash differs)"
            recorded = _obj(spec, "signature")
            if payloads.b64decode(recorded.get("content"), "signature") != signature:
                return "records another signature"
            pem = payloads.b64decode(_obj(recorded, "publicKey").get("content"), "key")
            if der_of_pem(pem) != key.der:
                return f"records another key than {key.name!r}"
            return None
        if (kind, version) == ("dsse", "0.0.1"):
            data = _obj(spec, "payloadHash")
            if data.get("algorithm") != "sha256" or data.get("value") != payload_hash:
                return "records another payload (its hash differs)"
            recorded_signatures = spec.get("signatures")
            if not isinstance(recorded_signatures, list):
                return "records no signatures"
            for item in recorded_signatures[:8]:
                if not isinstance(item, dict):
                    continue
                if payloads.b64decode(item.get("signature"), "signature") != signature:
                    continue
                verifier = payloads.b64decode(item.get("verifier"), "verifier")
                if der_of_pem(verifier) == key.der:
                    return None
            return f"does not record this signature by {key.name!r}"
    except payloads.PayloadError as e:
        return f"has a malformed body ({e})"
    return (
        f"is of kind {str(kind)[:40]!r} {str(version)[:20]!r}; kitpin checks hashedrekord and "
        "dsse 0.0.1 entries"
    )


def _obj(parent: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise payloads.PayloadError(f"{key} is {types.json_type(value)}, not an object")
    return value
