"""Registry credentials from docker ``config.json`` files and Kubernetes pull secrets: the
keychain. Pure except :meth:`Keychain.from_docker_config_dir`, which reads a file.

One parser reads all three shapes a credential file comes in:

- docker ``config.json`` and the ``.dockerconfigjson`` key of a ``kubernetes.io/dockerconfigjson``
  Secret: ``{"auths": {KEY: ENTRY, ...}, ...}``;
- the legacy ``.dockercfg`` (``~/.dockercfg``, ``kubernetes.io/dockercfg`` Secrets): the bare
  ``{KEY: ENTRY, ...}`` map.

KEY is ``host``, ``host:port``, a URL (``https://host/v1/``, ``http://host``) or, as the kubelet
allows, ``host/path`` (the credential then serves only repositories under ``path``) or a glob
host (``*.example.com``). ``https://index.docker.io/v1/`` and the other Docker Hub aliases mean
``docker.io``. ENTRY holds ``auth`` (base64 of ``user:password``), or ``username`` and
``password``, and optionally ``identitytoken`` (an OAuth2 refresh token) or ``registrytoken``
(a bearer token). Field names match case-insensitively, as docker's own (Go) parser does.
The JSON is decoded by :func:`controller.jsonlimits.loads` (nesting bounded: a document
thousands of levels deep is a :class:`~controller.errors.ConfigError` naming the source).

Credential helpers (``credHelpers``, ``credsStore``) run programs; kitpin never does, and
ignores them. Errors name the source and the key, never a secret value.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
import os
from dataclasses import dataclass
from typing import Final

from controller import errors, jsonlimits
from controller.registry import auth, hosts
from controller.types import Credential

__all__ = ["Keychain", "KeychainEntry", "normalise_registry"]

logger = logging.getLogger(__name__)

DOCKER_HUB: Final = "docker.io"
_DOCKER_HUB_ALIASES: Final = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_API_VERSION_PATHS: Final = frozenset({"", "v1", "v2"})
_IGNORED_HELPER_FIELDS: Final = ("credhelpers", "credsstore")


def normalise_registry(registry: str) -> str:
    """``host[:port]`` lowercased, with Docker Hub's aliases folded into ``docker.io``."""
    normalised = hosts.normalise_host_port(registry)
    return DOCKER_HUB if normalised in _DOCKER_HUB_ALIASES else normalised


@dataclass(frozen=True, kw_only=True)
class KeychainEntry:
    """One credential and where it applies."""

    host: str
    """Normalised ``host[:port]``; may hold ``*`` globs per dot-separated label."""
    path: str
    """Repository prefix it is limited to; ``""`` for the whole registry."""
    credential: Credential

    def matches(self, registry: str, repository: str | None) -> bool:
        if not _host_matches(self.host, registry):
            return False
        if not self.path:
            return True
        if repository is None:
            return False
        return repository == self.path or repository.startswith(self.path + "/")

    @property
    def specificity(self) -> tuple[bool, int]:
        return ("*" not in self.host, len(self.path))


@dataclass(frozen=True, kw_only=True)
class Keychain:
    """Credentials by registry. Immutable; :meth:`merge` combines keychains, first wins."""

    entries: tuple[KeychainEntry, ...] = ()

    def lookup(self, registry: str, *, repository: str | None = None) -> Credential | None:
        """The credential for ``registry`` (``host[:port]``), or None for anonymous access.

        The most specific entry wins: an exact host before a glob, a longer repository prefix
        before a shorter one (entries with a path apply only when ``repository`` is given),
        then the earlier entry."""
        try:
            wanted = normalise_registry(registry)
        except ValueError:
            return None
        best: KeychainEntry | None = None
        for entry in self.entries:
            if entry.matches(wanted, repository) and (
                best is None or entry.specificity > best.specificity
            ):
                best = entry
        return None if best is None else best.credential

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def merge(cls, *keychains: Keychain) -> Keychain:
        """One keychain holding all entries; for the same key the first keychain wins."""
        return cls(entries=tuple(e for k in keychains for e in k.entries))

    @classmethod
    def from_dockerconfigjson(cls, data: bytes, *, source: str) -> Keychain:
        """Parse docker ``config.json`` / ``.dockerconfigjson`` / legacy ``.dockercfg`` bytes
        (already base64-decoded from the Secret). ``source`` names it in messages and in
        :attr:`Credential.source`, e.g. ``secret team-a/regcred``. Raises
        :class:`errors.ConfigError` when malformed."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise errors.ConfigError(
                f"{source}: not UTF-8 text; expected a docker config.json"
            ) from None
        try:
            document = jsonlimits.loads(text)
        except jsonlimits.DecodeError as e:
            # What and where only: the decoder's message never quotes the document.
            raise errors.ConfigError(f"{source}: {e}; expected a docker config.json") from None
        return cls(entries=_entries_from_document(document, source))

    @classmethod
    def from_docker_config_dir(cls, directory: str | os.PathLike[str]) -> Keychain:
        """Read ``config.json`` in ``directory`` (docker's ``DOCKER_CONFIG``), or the legacy
        ``.dockercfg`` there when there is no ``config.json``."""
        name = os.fspath(directory)
        for filename in ("config.json", ".dockercfg"):
            path = os.path.join(name, filename)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise errors.ConfigError(
                    f"{path}: cannot read it ({e.strerror or e}); check the path and permissions"
                ) from e
            return cls.from_dockerconfigjson(data, source=path)
        raise errors.ConfigError(
            f"{name}: no config.json or .dockercfg there; point the docker config setting at "
            "the directory that holds config.json"
        )


def _entries_from_document(document: object, source: str) -> tuple[KeychainEntry, ...]:
    if not isinstance(document, dict):
        raise errors.ConfigError(f"{source}: the top level must be a JSON object")
    fields = {str(k).lower(): k for k in document}
    for helper in _IGNORED_HELPER_FIELDS:
        if helper in fields:
            logger.debug(
                "%s: ignoring %s: kitpin never runs credential helpers", source, fields[helper]
            )
    if "auths" in fields:
        auths = document[fields["auths"]]
        if auths is None:
            auths = {}
        where = "auths"
    elif all(isinstance(v, dict) for v in document.values()):
        auths = document  # legacy .dockercfg: a bare map of registries
        where = ""
    else:
        auths = {}  # a config.json without auths (only helpers, proxies, ...)
        where = "auths"
    if not isinstance(auths, dict):
        raise errors.ConfigError(f"{source}: auths must be a JSON object of registry entries")

    entries: list[KeychainEntry] = []
    for key, value in auths.items():
        label = f"{where}[{key!r}]" if where else repr(key)
        host, path = _parse_key(key, source, label)
        credential = _credential(value, source, label)
        if credential is None:
            logger.debug("%s: %s has no usable credential, skipped", source, label)
            continue
        entries.append(KeychainEntry(host=host, path=path, credential=credential))
    return tuple(entries)


def _parse_key(key: str, source: str, label: str) -> tuple[str, str]:
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host_text, _, path = text.partition("/")
    path = path.strip("/")
    if path in _API_VERSION_PATHS:
        path = ""
    try:
        host = normalise_registry(host_text)
    except ValueError as e:
        raise errors.ConfigError(
            f"{source}: {label}: the key must be a registry host[:port], optionally with a "
            f"scheme or path ({e})"
        ) from e
    return host, path


def _credential(entry: object, source: str, label: str) -> Credential | None:
    if not isinstance(entry, dict):
        raise errors.ConfigError(f"{source}: {label} must be a JSON object")
    fields: dict[str, object] = {str(k).lower(): v for k, v in entry.items()}

    def text(name: str) -> str | None:
        value = fields.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise errors.ConfigError(f"{source}: {label}: {name} must be a string")
        return value

    username, password = text("username"), text("password")
    encoded = text("auth")
    if encoded is not None:
        username, password = _decode_auth(encoded, source, label)
    identity_token, registry_token = text("identitytoken"), text("registrytoken")
    if registry_token is not None and not auth.is_header_safe(registry_token):
        raise errors.ConfigError(
            f"{source}: {label}: registrytoken has characters that cannot be sent in an "
            "Authorization header (only visible ASCII can); re-create the secret with the "
            "token as the registry issued it"
        )
    if not (username or password or identity_token or registry_token):
        return None
    return Credential(
        username=username,
        password=password,
        identity_token=identity_token,
        registry_token=registry_token,
        source=source,
    )


def _decode_auth(encoded: str, source: str, label: str) -> tuple[str, str]:
    compact = "".join(encoded.split())
    try:
        decoded = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        # Never chain the cause or quote the value: both could show the secret.
        raise errors.ConfigError(
            f"{source}: {label}: auth is not base64 of user:password; re-create the secret "
            "(kubectl create secret docker-registry ...)"
        ) from None
    username, sep, password = text.partition(":")
    if not sep:
        raise errors.ConfigError(
            f"{source}: {label}: auth decodes to a value without ':'; it must be base64 of "
            "user:password"
        )
    return username, password


def _host_matches(pattern: str, host: str) -> bool:
    if "*" not in pattern:
        return pattern == host
    pattern_host, pattern_port = hosts.split_host_port(pattern)
    host_name, port = hosts.split_host_port(host)
    if pattern_port != port:
        return False
    pattern_labels, labels = pattern_host.split("."), host_name.split(".")
    return len(pattern_labels) == len(labels) and all(
        fnmatch.fnmatchcase(label, p) for p, label in zip(pattern_labels, labels, strict=True)
    )
