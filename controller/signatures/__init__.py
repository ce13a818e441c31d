"""Verifying cosign signatures of the exact digest kitpin is about to pin (keys, no
keyless): :class:`Verifier` answers :data:`Outcome`, one of :class:`Verified` (naming the
key), :class:`SignatureMissing`, :class:`SignatureInvalid`, :class:`SignatureUnavailable`.

The path, one module per concern::

    verifier   cache per (repository, digest, key set, credential), single-flight
     ├── finding   I/O through the registry client (a Protocol): the ``sha256-<hex>.sig``
     │             tag and the digest's referrers (OCI 1.1 API, else the tag schema)
     └── judging   pure: which found signature counts, and the outcome
          ├── tlog      pure: Rekor entries verified offline against configured log keys
          ├── payloads  pure: simple-signing payloads, sigstore bundles, DSSE, in-toto
          └── keys      pure: PEM keys (ECDSA P-256, RSA, Ed25519), ``KeySet``
               └── model    pure: the outcomes, their reasons, ``SignatureKeyError``

Errors: a key that cannot be used raises ``SignatureKeyError``, a
:class:`controller.errors.ConfigError` naming the field (``keys[1].publicKey``); registry
failures never escape :meth:`Verifier.verify`, they are its ``SignatureUnavailable``
outcome. Import the package and call through it::

    keys = signatures.KeySet(keys=signatures.parse_keys(policy_keys))
    outcome = await verifier.verify(resolution.reference, resolution.digest, keys)

docs/signatures.md explains it for users.
"""

from __future__ import annotations

from controller.signatures.finding import SignatureRegistry
from controller.signatures.keys import KeySet, PublicKey, parse_keys, parse_public_key
from controller.signatures.model import (
    REASON_INVALID,
    REASON_MISSING,
    REASON_UNAVAILABLE,
    REASON_VERIFIED,
    LogStatus,
    Outcome,
    SignatureInvalid,
    SignatureKeyError,
    SignatureMissing,
    SignatureUnavailable,
    Verified,
)
from controller.signatures.verifier import Verifier

__all__ = [
    "REASON_INVALID",
    "REASON_MISSING",
    "REASON_UNAVAILABLE",
    "REASON_VERIFIED",
    "KeySet",
    "LogStatus",
    "Outcome",
    "PublicKey",
    "SignatureInvalid",
    "SignatureKeyError",
    "SignatureMissing",
    "SignatureRegistry",
    "SignatureUnavailable",
    "Verified",
    "Verifier",
    "parse_keys",
    "parse_public_key",
]
