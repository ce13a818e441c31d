"""One error hierarchy for kitpin.

Every error carries a constant ``reason`` (a short machine-readable name used in metrics,
annotations and admission responses) and a message that says what was wrong *and what to do*::

    KitpinError
     ├── ReferenceError            the text is not a usable ModelKit reference (user input)
     │    └── LocalReferenceError  kit grammar without a registry host: kit's local storage
     ├── ConfigError               a settings file, flag or credentials file is unusable
     ├── ManifestError             a manifest file `kitpin pin` cannot read or rewrite safely
     └── RegistryError             talking to a registry failed; nothing was pinned
          ├── NotFoundError          the repository or tag does not exist
          ├── UnauthorizedError      credentials missing or rejected (401)
          ├── ForbiddenError         credentials valid but not allowed (403)
          ├── RateLimitedError       429; ``retry_after`` seconds when the registry said
          ├── RegistryTimeoutError   no answer within the deadline
          ├── UnreachableError       connection refused, DNS failure, TLS failure
          ├── BadResponseError       the answer is not a usable manifest
          │    └── ManifestTooLargeError
          ├── DigestMismatchError    the bytes do not hash to the digest the registry claimed
          └── HostNotAllowedError    a host, redirect or token realm outside the host policy

"Object rejected" (an admission denial) is built from these by the webhook layer; these
classes never know about Kubernetes.
"""

from __future__ import annotations

__all__ = [
    "BadResponseError",
    "ConfigError",
    "DigestMismatchError",
    "ForbiddenError",
    "HostNotAllowedError",
    "KitpinError",
    "LocalReferenceError",
    "ManifestError",
    "ManifestTooLargeError",
    "NotFoundError",
    "RateLimitedError",
    "ReferenceError",
    "RegistryError",
    "RegistryTimeoutError",
    "UnauthorizedError",
    "UnreachableError",
]


class KitpinError(Exception):
    """Base of every error kitpin raises on purpose."""

    reason: str = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ReferenceError(KitpinError):  # noqa: A001 - deliberately shadows the rarely used builtin
    """The text is not a valid ModelKit/image reference."""

    reason = "InvalidReference"

    def __init__(self, message: str, *, text: str) -> None:
        super().__init__(message)
        self.text = text


class LocalReferenceError(ReferenceError):
    """A kit-grammar reference without a registry host: it names kit's local storage."""

    reason = "LocalReference"


class ConfigError(KitpinError):
    """A configuration file, flag or credential file cannot be used."""

    reason = "InvalidConfig"


class ManifestError(KitpinError):
    """A manifest (YAML/JSON file) that kitpin cannot read or cannot rewrite safely; the
    message names the source and line."""

    reason = "InvalidManifest"


class RegistryError(KitpinError):
    """Resolution failed while talking to a registry; nothing was pinned."""

    reason = "RegistryError"

    def __init__(self, message: str, *, registry: str = "", repository: str = "") -> None:
        super().__init__(message)
        self.registry = registry
        self.repository = repository


class NotFoundError(RegistryError):
    reason = "NotFound"


class UnauthorizedError(RegistryError):
    reason = "Unauthorized"


class ForbiddenError(RegistryError):
    reason = "Forbidden"


class RateLimitedError(RegistryError):
    reason = "RateLimited"

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        repository: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, registry=registry, repository=repository)
        self.retry_after = retry_after


class RegistryTimeoutError(RegistryError):
    reason = "Timeout"


class UnreachableError(RegistryError):
    reason = "Unreachable"


class BadResponseError(RegistryError):
    reason = "BadResponse"


class ManifestTooLargeError(BadResponseError):
    reason = "ManifestTooLarge"


class DigestMismatchError(RegistryError):
    reason = "DigestMismatch"


class HostNotAllowedError(RegistryError):
    reason = "HostNotAllowed"
