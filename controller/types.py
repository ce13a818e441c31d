r"""Value types every layer shares, and the few helpers for wire values they need. Pure: no I/O.

The bottom floor with :mod:`controller.refs`: the registry client returns a :class:`Manifest`,
the resolver a :class:`Resolution`, policy reads both, the engine and the CLI pass
:class:`Credential`\ s along. Nothing here imports a kitpin module but ``refs``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Final, Literal, TypeGuard

from controller import refs

__all__ = [
    "ANONYMOUS",
    "ArtifactFormat",
    "Credential",
    "Kitfile",
    "Layer",
    "Manifest",
    "ModelFormat",
    "Resolution",
    "ResolutionSource",
    "identity_of",
    "is_int",
    "json_type",
    "rfc3339",
]

ModelFormat = Literal["kitops-modelkit", "modelpack"]
"""The model artifacts kitpin pins: a KitOps ModelKit, a CNCF ModelPack."""

ArtifactFormat = ModelFormat | Literal["oci-index", "other"]
"""What a manifest is (:func:`controller.artifacts.classify`)."""

ANONYMOUS: Final = "anonymous"
"""The identity of no credential, in cache keys (never a valid ``Credential.identity``, which
is 16 hex digits)."""

Kitfile = Mapping[str, Any]
"""A KitOps ModelKit's config blob: the Kitfile as JSON (``manifestVersion``, ``package``,
``model``, ``datasets``, ...); the helpers that read it are in :mod:`controller.policy.kitfile`."""


@dataclass(frozen=True, kw_only=True)
class Credential:
    """What to authenticate with at one registry. Never logged; ``identity`` is the only part
    that may appear in cache keys or logs (a hash, not the secret)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    """An OAuth2 refresh token (``identitytoken`` in docker config.json)."""
    registry_token: str | None = field(default=None, repr=False)
    """A bearer token sent as is (``registrytoken`` in docker config.json)."""
    source: str = ""
    """Where it came from, for messages: ``secret ns/name``, ``--docker-config``, ..."""

    @cached_property
    def identity(self) -> str:
        """A stable, non-reversible fingerprint of the secret material (computed once)."""
        parts = (self.username, self.password, self.identity_token, self.registry_token)
        material = "\0".join(x or "" for x in parts)
        return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A manifest as served, verified: ``digest`` is sha256 of the exact bytes received."""

    digest: str
    media_type: str
    """The Content-Type served (or the body's ``mediaType``)."""
    size: int
    format: ArtifactFormat
    artifact_type: str | None = None
    config_media_type: str | None = None
    config_digest: str | None = None
    config_size: int | None = None
    layers: tuple[Layer, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)


def identity_of(credential: Credential | None) -> str:
    """:attr:`Credential.identity`, or :data:`ANONYMOUS` without one (for cache keys)."""
    return ANONYMOUS if credential is None else credential.identity


ResolutionSource = Literal["registry", "cache", "coalesced", "stale"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """The answer to one resolution of a reference to a verified digest."""

    reference: refs.Reference
    """The reference the caller asked about (its own spelling, even on a cache hit)."""

    digest: str
    """``sha256:<64 hex>``, computed from the manifest bytes by the registry client."""

    manifest: Manifest

    resolved_at: datetime
    """UTC wall-clock time at which the registry gave this answer (not when it was served)."""

    stale: bool = False
    """True when served from an expired cache entry because the registry failed."""

    source: ResolutionSource
    """``registry``: this call fetched it; ``coalesced``: this call joined a fetch in flight;
    ``cache``: a fresh cache entry; ``stale``: an expired entry, see ``stale_reason``."""

    stale_reason: str | None = None
    """For ``stale`` answers: the error that prevented a fresh answer."""


# --- wire values --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # one per cached resolution, rendered once
def rfc3339(when: datetime) -> str:
    """``2026-01-02T03:04:05Z``: the timestamp form of Kubernetes objects (UTC, seconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_int(value: object) -> TypeGuard[int]:
    """A decoded JSON/YAML integer (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: object) -> str:
    """The name of a decoded JSON/YAML value's type, for messages (``a string``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"  # the apiserver's word for a list in schema errors, too
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
