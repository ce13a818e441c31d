"""Values the registry client returns and takes. Pure data, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

ArtifactFormat = Literal["kitops-modelkit", "modelpack", "oci-index", "other"]


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
