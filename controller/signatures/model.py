"""What a signature check answers, and the package's one error. Pure values.

Every check ends in one of four outcomes, each a frozen value with a constant ``reason`` and a
``message`` that says what to do (the engine turns them into an allow, a warning or a denial;
policy decides which):

============================  =====================================================================
:class:`Verified`             a signature over exactly this digest verifies with a listed key
                              (``key`` names it)
:class:`SignatureMissing`     no signature was found for the digest (none stored, or only
                              attestations)
:class:`SignatureInvalid`     signatures were found, none counts: signed by another key, a payload
                              naming another digest, a tampered payload, an unusable log entry
:class:`SignatureUnavailable` a registry error while fetching signatures (and none verified):
                              the digest may be signed; try again
============================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from controller import errors

__all__ = [
    "REASON_INVALID",
    "REASON_MISSING",
    "REASON_UNAVAILABLE",
    "REASON_VERIFIED",
    "LogStatus",
    "Outcome",
    "SignatureInvalid",
    "SignatureKeyError",
    "SignatureMissing",
    "SignatureUnavailable",
    "Verified",
]

REASON_VERIFIED: Final = "SignatureVerified"
REASON_MISSING: Final = "SignatureMissing"
REASON_INVALID: Final = "SignatureInvalid"
REASON_UNAVAILABLE: Final = "SignatureUnavailable"

LogStatus = Literal["verified", "unchecked", "absent"]
"""The transparency-log entry of the signature that verified: ``verified`` offline against a
configured log key, ``unchecked`` (it carries one, no log key is configured), ``absent``
(signed without a log, ``cosign sign --tlog-upload=false``)."""


class SignatureKeyError(errors.ConfigError):
    """A verification key (or transparency-log key) cannot be used. ``field`` names it as the
    policy spells it (``keys[1].publicKey``), the message says why and what to give instead."""

    reason = "InvalidSignatureKey"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, kw_only=True)
class Verified:
    """A signature over exactly ``digest`` verified with the key named ``key``."""

    reason: ClassVar[str] = REASON_VERIFIED
    subject: str
    """``registry/repository@digest``: what was checked."""
    digest: str
    key: str
    """The ``name`` of the listed key that verified the signature."""
    where: str
    """Where the signature was found: ``tag sha256-<hex>.sig`` or ``referrer sha256:…``."""
    log: LogStatus
    message: str


@dataclass(frozen=True, kw_only=True)
class SignatureMissing:
    """No signature of the digest was found where cosign stores them."""

    reason: ClassVar[str] = REASON_MISSING
    subject: str
    digest: str
    message: str


@dataclass(frozen=True, kw_only=True)
class SignatureInvalid:
    """Signatures were found but none counts; ``problems`` says why, one per signature."""

    reason: ClassVar[str] = REASON_INVALID
    subject: str
    digest: str
    problems: tuple[str, ...]
    message: str


@dataclass(frozen=True, kw_only=True)
class SignatureUnavailable:
    """The registry failed while kitpin fetched the signatures and none verified."""

    reason: ClassVar[str] = REASON_UNAVAILABLE
    subject: str
    digest: str
    error_reason: str
    """The ``reason`` of the registry error (``Unreachable``, ``Timeout``, ``Unauthorized``…)."""
    message: str


Outcome = Verified | SignatureMissing | SignatureInvalid | SignatureUnavailable
"""What :meth:`controller.signatures.Verifier.verify` answers; match on the class."""
