"""Judging what :mod:`.finding` found: which outcome a digest gets. Pure.

A signature counts only when all of these hold:

1. it verifies with a listed key over exactly the bytes stored (a simple-signing payload as
   stored; a DSSE envelope's pre-authentication encoding of its payload);
2. its payload names exactly this digest (``critical.image.docker-manifest-digest`` of a
   simple-signing payload; a sha256 subject of the in-toto statement of a bundle, whose
   predicate type must be cosign's signature predicate; an attestation is not a signature
   and is ignored);
3. when transparency-log keys are configured, a log entry it carries verifies offline
   (:mod:`.tlog`); when a log entry is required, it carries one that verifies.

The first that counts (``.sig`` tag first, then referrers, keys in the order listed) makes
the outcome :class:`~.model.Verified`. Else a registry error met while looking makes it
:class:`~.model.SignatureUnavailable` (the failed source may hold a good signature); else
signatures found make it :class:`~.model.SignatureInvalid`, with one problem per signature;
else :class:`~.model.SignatureMissing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.signatures import payloads, tlog
from controller.signatures.finding import Candidate, Found, signature_tag
from controller.signatures.keys import KeySet, PublicKey
from controller.signatures.model import (
    LogStatus,
    Outcome,
    SignatureInvalid,
    SignatureMissing,
    SignatureUnavailable,
    Verified,
)

__all__ = ["judge"]


@dataclass(frozen=True, kw_only=True)
class _Counted:
    key: PublicKey
    log: LogStatus


def judge(found: Found, *, subject: str, digest: str, keys: KeySet) -> Outcome:
    """The outcome for ``digest`` (``subject``: ``registry/repository@digest``, for messages)
    from what was found, checked with ``keys``."""
    problems: list[str] = []
    for candidate in found.candidates:
        result = _check(candidate, digest=digest, keys=keys)
        if isinstance(result, _Counted):
            log = {
                "verified": "its transparency-log entry verified",
                "unchecked": "its transparency-log entry was not checked (no log key configured)",
                "absent": "no transparency-log entry",
            }[result.log]
            return Verified(
                subject=subject,
                digest=digest,
                key=result.key.name,
                where=candidate.where,
                log=result.log,
                message=(
                    f"{subject} is signed by the key {result.key.name!r} (cosign signature in "
                    f"{candidate.where}; {log})"
                ),
            )
        if result is not None:
            problems.append(f"{candidate.where}: {result}")
    if found.failures:
        first = found.failures[0]
        more = f" (and {len(found.failures) - 1} more errors)" if len(found.failures) > 1 else ""
        return SignatureUnavailable(
            subject=subject,
            digest=digest,
            error_reason=first.reason,
            message=(
                f"the signatures of {subject} could not all be fetched, and none fetched "
                f"verifies: {first.message}{more}. kitpin cannot tell whether it is signed; "
                "fix the registry access and try again"
            ),
        )
    problems.extend(f"not read: {s}" for s in found.skipped)
    if problems:
        shown = "; ".join(problems[:5])
        if len(problems) > 5:
            shown += f"; and {len(problems) - 5} more"
        return SignatureInvalid(
            subject=subject,
            digest=digest,
            problems=tuple(problems),
            message=(
                f"{subject} has {len(problems)} signature(s), none valid for this digest with "
                f"the keys {keys.names}: {shown}. Sign this exact digest with one of these "
                f"keys (cosign sign --key <key> {subject}), or list the key that signed it"
            ),
        )
    return SignatureMissing(
        subject=subject,
        digest=digest,
        message=(
            f"{subject} is not signed: no cosign signature in the tag "
            f"{signature_tag(digest)} nor among the digest's referrers. Sign this exact digest "
            f"with one of the keys {keys.names} (cosign sign --key <key> {subject}) and push the "
            "signature to the same repository"
        ),
    )


def _check(candidate: Candidate, *, digest: str, keys: KeySet) -> _Counted | str | None:
    """Whether ``candidate`` counts (:class:`_Counted`), why not (a problem), or None when it
    is no signature at all (an attestation)."""
    try:
        if candidate.media_type == payloads.SIMPLE_SIGNING:
            return _check_simple_signing(candidate, digest=digest, keys=keys)
        return _check_bundle(candidate, digest=digest, keys=keys)
    except payloads.PayloadError as e:
        return f"unreadable: {e}"


def _check_simple_signing(candidate: Candidate, *, digest: str, keys: KeySet) -> _Counted | str:
    encoded = candidate.annotations.get(payloads.SIGNATURE_ANNOTATION)
    if encoded is None:
        return f"the layer has no {payloads.SIGNATURE_ANNOTATION} annotation (no signature)"
    signature = payloads.b64decode(encoded, "the signature annotation")
    key = _key_for(keys, signature, candidate.blob)
    if key is None:
        return f"the signature does not verify with any of the keys ({keys.names})"
    named = payloads.simple_signing_digest(candidate.blob)
    if named != digest:
        return (
            f"signed by {key.name!r} but its payload names {named}, not this digest (a "
            "signature of another artifact)"
        )
    entries: tuple[tlog.LogEntry, ...] = ()
    annotation = candidate.annotations.get(payloads.REKOR_BUNDLE_ANNOTATION)
    if annotation is not None and keys.log_keys:
        entries = (tlog.from_annotation(annotation),)
    return _logged(
        keys,
        key,
        entries,
        carried=annotation is not None,
        payload=candidate.blob,
        signature=signature,
    )


def _check_bundle(candidate: Candidate, *, digest: str, keys: KeySet) -> _Counted | str | None:
    bundle = payloads.parse_bundle(candidate.blob)
    predicate_type, subjects = payloads.statement(bundle)
    if predicate_type != payloads.COSIGN_SIGN_PREDICATE:
        return None  # an attestation, not a signature
    signed = payloads.pae(bundle.payload_type, bundle.payload)
    matched: tuple[PublicKey, bytes] | None = None
    for signature in bundle.signatures:
        key = _key_for(keys, signature, signed)
        if key is not None:
            matched = (key, signature)
            break
    if matched is None:
        return f"the bundle's signature does not verify with any of the keys ({keys.names})"
    key, signature = matched
    if digest not in subjects:
        named = ", ".join(subjects) or "no sha256 digest"
        return (
            f"signed by {key.name!r} but its statement names {named}, not this digest (a "
            "signature of another artifact)"
        )
    entries: tuple[tlog.LogEntry, ...] = ()
    if keys.log_keys:
        entries = tuple(tlog.from_bundle_entry(e) for e in bundle.tlog_entries)
    return _logged(
        keys,
        key,
        entries,
        carried=bool(bundle.tlog_entries),
        payload=bundle.payload,
        signature=signature,
    )


def _logged(
    keys: KeySet,
    key: PublicKey,
    entries: tuple[tlog.LogEntry, ...],
    *,
    carried: bool,
    payload: bytes,
    signature: bytes,
) -> _Counted | str:
    """A signature that verified with ``key``, judged on its log entries."""
    if not keys.log_keys:
        return _Counted(key=key, log="unchecked" if carried else "absent")
    if not entries:
        if keys.require_log_entry:
            return (
                f"signed by {key.name!r} without a transparency-log entry, and one is required; "
                "sign with the log (cosign sign without --tlog-upload=false)"
            )
        return _Counted(key=key, log="absent")
    problems = [
        problem
        for entry in entries
        if (
            problem := tlog.check(
                entry, keys.log_keys, payload=payload, signature=signature, key=key
            )
        )
        is not None
    ]
    if len(problems) < len(entries):
        return _Counted(key=key, log="verified")
    return f"signed by {key.name!r}, but {problems[0]}"


def _key_for(keys: KeySet, signature: bytes, message: bytes) -> PublicKey | None:
    return next((key for key in keys.keys if key.verify(signature, message)), None)
