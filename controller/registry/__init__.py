"""Async OCI distribution client over httpx: which hosts may be contacted (:mod:`.hosts`),
credentials from docker config files and pull secrets (:mod:`.credentials`), Basic and Bearer
token auth (:mod:`.auth`), and :class:`RegistryClient` (:mod:`.client`), which fetches
manifests and config blobs, caps their size and verifies their digests locally
(:mod:`.responses`), or asks for a manifest's digest only (``HEAD``). Its requests are
built by :mod:`.requests` and sent by :mod:`.sender` (host policy, DNS answers checked by
:mod:`.dns`, redirects), after the ``GET /v2/`` check of :mod:`.ping` and the token fetches
of :mod:`.tokens`; they go over aiohttp (:mod:`.transport`, httpx's transport interface).

Import the package and call through it: ``registry.RegistryClient(policy)``.
"""

from __future__ import annotations

from controller.registry.client import RegistryClient
from controller.registry.credentials import Keychain
from controller.registry.hosts import HostPolicy, RegistryHostConfig, load_registry_config
from controller.types import ArtifactFormat, Credential, Layer, Manifest

__all__ = [
    "ArtifactFormat",
    "Credential",
    "HostPolicy",
    "Keychain",
    "Layer",
    "Manifest",
    "RegistryClient",
    "RegistryHostConfig",
    "load_registry_config",
]
