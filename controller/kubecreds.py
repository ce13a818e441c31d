"""Registry credentials on behalf of one object, from its own namespace only.

Order for a registry: the pod spec's ``imagePullSecrets`` (in order), then those of its
ServiceAccount (``default`` when unset), then the controller's central credentials. Secrets
are read by name with ``get`` (never ``list``), always in the object's own namespace: a
workload can never borrow another namespace's secret (the confused-deputy rule), even when a
secret of the same name exists elsewhere.

Reads are cached briefly (``ttl``) and concurrent reads of one object share one GET, so a
rollout of many Pods does not cost the apiserver one GET per Pod, not even for the Pods that
arrive together before the first answer. A missing or unreadable secret is skipped
(logged): resolution then proceeds with the next credential or anonymously, and a private
repository answers 401, which the denial reports with what to do. An unusable one (not a
pull secret, not base64, not a docker config.json, JSON nested thousands of levels deep) is
skipped too, with one warning naming it, and remembered as unusable like a good one is
remembered: for ``ttl``, and after that for as long as its ``resourceVersion`` stays the
same (it is read again, but neither parsed nor reported again). The caches are bounded
(:data:`MAX_CACHED`): Pods naming ever new secrets cannot grow them without end.

Signature keys (:class:`SecretKeys`): the public key a policy's ``signatures.keys[].secretRef``
names, read the same way (``get`` by name, cached for ``ttl``, concurrent reads shared, a
bounded cache) in the one namespace the caller names (:mod:`controller.admission.signing`:
the policy's own, or kitpin's for a cluster policy). Only the value asked for is kept (a
Secret that ``cosign generate-key-pair k8s://`` wrote also holds the encrypted private key and
its password), and a value holding a private key is refused, never kept.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from controller import errors, kubeapi
from controller.flights import Flights
from controller.registry.credentials import Keychain
from controller.types import Credential

logger = logging.getLogger(__name__)

PULL_SECRET_TYPES = frozenset({"kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"})

READ_TIMEOUT = 3.0
"""Seconds for one read of a ServiceAccount or a Secret."""

MAX_CACHED: Final = 10_000
"""ServiceAccounts, and Secrets, remembered at most (each cache): when full, expired entries
go first, then the oldest."""


@dataclass(frozen=True, kw_only=True)
class SecretRead:
    """A Secret as read: what kitpin needs of it."""

    type: str
    data: Mapping[str, str]
    """Its ``data``: base64 values by key."""
    resource_version: str = ""
    """``metadata.resourceVersion``; ``""`` when unknown (then it is parsed at every read)."""


class KubeReader(Protocol):
    """The two reads kitpin needs (``get`` by name, never ``list``)."""

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        """The names in its ``imagePullSecrets``; None when absent/forbidden."""
        ...

    async def secret(self, namespace: str, name: str) -> SecretRead | None:
        """The Secret, or None when absent/forbidden."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cached:
    """A Secret's outcome: its keychain (None: absent or unusable) until ``expires``."""

    expires: float
    keychain: Keychain | None
    resource_version: str


class ApiReader:
    """:class:`KubeReader` over :class:`controller.kubeapi.KubeAPI`.

    Any error status of the apiserver (404 absent, 403 not allowed by RBAC, ...) and a name
    that cannot address an object is "not readable": logged, None. No answer at all
    (:class:`~controller.kubeapi.UnreachableError`) propagates: the admission fails, rather
    than resolving without the credentials the workload has."""

    def __init__(self, api: kubeapi.KubeAPI[Any], *, timeout: float = READ_TIMEOUT) -> None:
        self._api = api
        self._timeout = timeout

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        sa = await self._get("service account", namespace, "serviceaccounts", name)
        if sa is None:
            return None
        return [
            entry["name"]
            for entry in sa.get("imagePullSecrets") or ()
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"]
        ]

    async def secret(
        self, namespace: str, name: str, *, what: str = "pull secret"
    ) -> SecretRead | None:
        """The Secret, or None when absent/forbidden (logged as ``what``)."""
        secret = await self._get(what, namespace, "secrets", name)
        if secret is None:
            return None
        raw = secret.get("data")
        data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        metadata = secret.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
        return SecretRead(
            type=str(secret.get("type") or ""),
            data=data,
            resource_version=version if isinstance(version, str) else "",
        )

    async def _get(
        self, what: str, namespace: str, resource: str, name: str
    ) -> dict[str, Any] | None:
        try:
            where = kubeapi.path("api", "v1", "namespaces", namespace, resource, name)
            return await self._api.get(where, timeout=self._timeout)
        except (kubeapi.ApiError, ValueError) as e:
            logger.info("%s %s/%s not readable: %s", what, namespace, name, e)
            return None


class SecretReader(Protocol):
    """Reads a Secret by name (:meth:`ApiReader.secret`)."""

    async def secret(self, namespace: str, name: str, *, what: str = ...) -> SecretRead | None:
        """The Secret, or None when absent/forbidden (logged as ``what``)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _CachedValue:
    """One Secret value (or why it cannot be had) until ``expires``."""

    expires: float
    value: bytes | errors.ConfigError
    resource_version: str


class SecretKeys:
    """Implements :class:`controller.admission.signing.KeySecrets`: one value of one Secret
    (a signature key), see the module docstring."""

    def __init__(
        self,
        reader: SecretReader,
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str, str], _CachedValue] = {}
        self._reads: Flights[tuple[str, str, str], bytes | errors.ConfigError] = Flights()

    def peek(self, namespace: str, name: str, key: str) -> bytes | errors.ConfigError | None:
        hit = self._cache.get((namespace, name, key))
        if hit is None or hit.expires <= self._clock():
            return None
        return hit.value

    async def read(self, namespace: str, name: str, key: str) -> bytes:
        cache_key = (namespace, name, key)
        hit = self._cache.get(cache_key)
        if hit is not None and hit.expires > self._clock():
            value = hit.value
        else:

            async def fetch() -> bytes | errors.ConfigError:
                found = await self._reader.secret(namespace, name, what="signature key secret")
                before = self._cache.get(cache_key)
                version = found.resource_version if found is not None else ""
                if found is not None and version and before and before.resource_version == version:
                    got = before.value  # unchanged: not decoded again
                else:
                    got = _key_value(found, namespace, name, key)
                now = self._clock()
                entry = _CachedValue(expires=now + self._ttl, value=got, resource_version=version)
                _remember(self._cache, cache_key, entry, now=now, expires=lambda e: e.expires)
                return got

            value = await self._reads.result(cache_key, fetch)
        if isinstance(value, errors.ConfigError):
            raise value
        return value


MAX_KEY_VALUE: Final = 16 * 1024
"""The largest Secret value read as a public key (a PEM public key is under 1 KiB)."""


def _key_value(
    secret: SecretRead | None, namespace: str, name: str, key: str
) -> bytes | errors.ConfigError:
    """``data[key]`` of ``secret``, decoded, or why it cannot be used as a public key."""
    where = f"Secret {namespace}/{name}"
    if secret is None:
        return errors.ConfigError(
            f"{where} does not exist or kitpin may not read it (it needs `get` on secrets "
            f"there): create it with the public key under {key!r}"
        )
    raw = secret.data.get(key)
    if raw is None:
        present = ", ".join(sorted(secret.data)) or "none"
        return errors.ConfigError(
            f"{where} has no key {key!r} (its keys: {present}); set secretRef.key, or put "
            "the public key there"
        )
    try:
        value = base64.b64decode(raw, validate=True)
    except ValueError:
        return errors.ConfigError(f"{where} key {key!r} is not base64; re-create the Secret")
    if len(value) > MAX_KEY_VALUE:
        return errors.ConfigError(
            f"{where} key {key!r} holds {len(value)} bytes, more than {MAX_KEY_VALUE}: not a "
            "public key"
        )
    if b"PRIVATE KEY" in value:
        return errors.ConfigError(
            f"{where} key {key!r} holds a private key; point secretRef.key at the public key "
            "(cosign.pub)"
        )
    return value


class NamespaceCredentials:
    """Implements :class:`controller.admission.pinning.Credentials`."""

    def __init__(
        self,
        reader: KubeReader,
        *,
        central: Keychain | None = None,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._central = central
        self._ttl = ttl
        self._clock = clock
        self._sa_cache: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._secret_cache: dict[tuple[str, str], _Cached] = {}
        # Reads in flight, joined by concurrent lookups of the same object: the first Pods of
        # a rollout in a namespace arrive together, and must cost the apiserver one read each.
        self._sa_reads: Flights[tuple[str, str], list[str]] = Flights()
        self._secret_reads: Flights[tuple[str, str], Keychain | None] = Flights()

    async def lookup(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> Credential | None:
        names: list[str] = []
        if pod_spec is not None:
            for entry in pod_spec.get("imagePullSecrets") or ():
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    names.append(entry["name"])
            sa_name = pod_spec.get("serviceAccountName") or "default"
            if isinstance(sa_name, str):
                names.extend(
                    n for n in await self._sa_secrets(namespace, sa_name) if n not in names
                )
        for name in names:
            keychain = await self._keychain(namespace, name)
            credential = keychain.lookup(registry, repository=repository) if keychain else None
            if credential is not None:
                return credential
        if self._central is None:
            return None
        return self._central.lookup(registry, repository=repository)

    def lookup_cached(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> tuple[bool, Credential | None]:
        """:meth:`lookup` from the caches alone: ``(True, credential)`` when every read it
        needs is cached and fresh, else ``(False, None)`` (then await :meth:`lookup`).
        Synchronous: the common case of a rollout costs no task and no thread."""
        now = self._clock()
        names: list[str] = []
        if pod_spec is not None:
            for entry in pod_spec.get("imagePullSecrets") or ():
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    names.append(entry["name"])
            sa_name = pod_spec.get("serviceAccountName") or "default"
            if isinstance(sa_name, str):
                hit = self._sa_cache.get((namespace, sa_name))
                if not hit or hit[0] <= now:
                    return False, None
                names.extend(n for n in hit[1] if n not in names)
        for name in names:
            cached = self._secret_cache.get((namespace, name))
            if not cached or cached.expires <= now:
                return False, None
            keychain = cached.keychain
            credential = keychain.lookup(registry, repository=repository) if keychain else None
            if credential is not None:
                return True, credential
        if self._central is None:
            return True, None
        return True, self._central.lookup(registry, repository=repository)

    async def _sa_secrets(self, namespace: str, name: str) -> list[str]:
        key = (namespace, name)
        hit = self._sa_cache.get(key)
        if hit and hit[0] > self._clock():
            return hit[1]

        async def read() -> list[str]:
            found = await self._reader.service_account_pull_secrets(namespace, name)
            value = found or []
            now = self._clock()
            entry = (now + self._ttl, value)
            _remember(self._sa_cache, key, entry, now=now, expires=lambda e: e[0])
            return value

        return await self._sa_reads.result(key, read)

    async def _keychain(self, namespace: str, name: str) -> Keychain | None:
        key = (namespace, name)
        hit = self._secret_cache.get(key)
        if hit and hit.expires > self._clock():
            return hit.keychain

        async def read() -> Keychain | None:
            found = await self._reader.secret(namespace, name)
            before = self._secret_cache.get(key)
            version = found.resource_version if found is not None else ""
            if found is None:
                keychain = None
            elif version and before is not None and before.resource_version == version:
                keychain = before.keychain  # unchanged: neither parsed nor reported again
            else:
                keychain = _keychain_of(found, namespace, name)
            now = self._clock()
            entry = _Cached(expires=now + self._ttl, keychain=keychain, resource_version=version)
            _remember(self._secret_cache, key, entry, now=now, expires=lambda e: e.expires)
            return keychain

        return await self._secret_reads.result(key, read)


def _keychain_of(secret: SecretRead, namespace: str, name: str) -> Keychain | None:
    """The keychain of a pull secret; None (with one warning naming it) when unusable."""
    if secret.type not in PULL_SECRET_TYPES:
        logger.info(
            "secret %s/%s has type %r, not a pull secret; skipped", namespace, name, secret.type
        )
        return None
    field = ".dockerconfigjson" if secret.type == "kubernetes.io/dockerconfigjson" else ".dockercfg"
    source = f"secret {namespace}/{name}"
    try:
        raw = base64.b64decode(secret.data.get(field, ""), validate=True)
    except ValueError:
        logger.warning(
            "pull secret skipped: %s: %s is not base64; re-create the secret", source, field
        )
        return None
    try:
        return Keychain.from_dockerconfigjson(raw, source=source)
    except errors.ConfigError as e:
        logger.warning("pull secret skipped: %s", e)
        return None


K = TypeVar("K")
V = TypeVar("V")


def _remember(
    cache: dict[K, V], key: K, value: V, *, now: float, expires: Callable[[V], float]
) -> None:
    """``cache[key] = value``, keeping at most :data:`MAX_CACHED` entries: expired ones
    (``expires(value) <= now``) go first, then the oldest."""
    cache.pop(key, None)
    if len(cache) >= MAX_CACHED:
        for stale in [k for k, v in cache.items() if expires(v) <= now]:
            del cache[stale]
        while len(cache) >= MAX_CACHED:
            del cache[next(iter(cache))]
    cache[key] = value
