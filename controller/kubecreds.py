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
repository answers 401, which the denial reports with what to do.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controller import errors, kubeapi
from controller.flights import Flights
from controller.registry.credentials import Keychain
from controller.types import Credential

logger = logging.getLogger(__name__)

PULL_SECRET_TYPES = frozenset({"kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"})

READ_TIMEOUT = 3.0
"""Seconds for one read of a ServiceAccount or a Secret."""


class KubeReader(Protocol):
    """The two reads kitpin needs (``get`` by name, never ``list``)."""

    async def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        """The names in its ``imagePullSecrets``; None when absent/forbidden."""
        ...

    async def secret(self, namespace: str, name: str) -> tuple[str, Mapping[str, str]] | None:
        """(type, base64 data) or None when absent/forbidden."""
        ...


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

    async def secret(self, namespace: str, name: str) -> tuple[str, Mapping[str, str]] | None:
        secret = await self._get("pull secret", namespace, "secrets", name)
        if secret is None:
            return None
        raw = secret.get("data")
        data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        return str(secret.get("type") or ""), data

    async def _get(
        self, what: str, namespace: str, resource: str, name: str
    ) -> dict[str, Any] | None:
        try:
            where = kubeapi.path("api", "v1", "namespaces", namespace, resource, name)
            return await self._api.get(where, timeout=self._timeout)
        except (kubeapi.ApiError, ValueError) as e:
            logger.info("%s %s/%s not readable: %s", what, namespace, name, e)
            return None


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
        self._secret_cache: dict[tuple[str, str], tuple[float, Keychain | None]] = {}
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
            if not cached or cached[0] <= now:
                return False, None
            keychain = cached[1]
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
            self._sa_cache[key] = (self._clock() + self._ttl, value)
            return value

        return await self._sa_reads.result(key, read)

    async def _keychain(self, namespace: str, name: str) -> Keychain | None:
        key = (namespace, name)
        hit = self._secret_cache.get(key)
        if hit and hit[0] > self._clock():
            return hit[1]

        async def read() -> Keychain | None:
            keychain = await self._read_keychain(namespace, name)
            self._secret_cache[key] = (self._clock() + self._ttl, keychain)
            return keychain

        return await self._secret_reads.result(key, read)

    async def _read_keychain(self, namespace: str, name: str) -> Keychain | None:
        found = await self._reader.secret(namespace, name)
        if found is None:
            return None
        kind, data = found
        if kind not in PULL_SECRET_TYPES:
            logger.info(
                "secret %s/%s has type %r, not a pull secret; skipped", namespace, name, kind
            )
            return None
        field = ".dockerconfigjson" if kind == "kubernetes.io/dockerconfigjson" else ".dockercfg"
        try:
            raw = base64.b64decode(data.get(field, ""), validate=True)
            return Keychain.from_dockerconfigjson(raw, source=f"secret {namespace}/{name}")
        except (ValueError, errors.ConfigError) as e:
            logger.warning("pull secret %s/%s is unusable: %s", namespace, name, e)
            return None
