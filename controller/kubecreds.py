"""Registry credentials on behalf of one object, from its own namespace only.

Order for a registry: the pod spec's ``imagePullSecrets`` (in order), then those of its
ServiceAccount (``default`` when unset), then the controller's central credentials. Secrets
are read by name with ``get`` (never ``list``), always in the object's own namespace: a
workload can never borrow another namespace's secret (the confused-deputy rule), even when a
secret of the same name exists elsewhere.

Reads are cached briefly (``ttl``) so a rollout of many Pods does not cost the apiserver one
GET per Pod. A missing or unreadable secret is skipped (logged): resolution then proceeds
with the next credential or anonymously, and a private repository answers 401, which the
denial reports with what to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controller.registry.credentials import Keychain
from controller.registry.types import Credential

logger = logging.getLogger(__name__)

PULL_SECRET_TYPES = frozenset({"kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"})


class KubeReader(Protocol):
    """The two reads kitpin needs; blocking calls (run in a thread)."""

    def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None: ...

    def secret(self, namespace: str, name: str) -> tuple[str, Mapping[str, str]] | None:
        """(type, base64 data) or None when absent/forbidden."""
        ...


class ClientReader:
    """:class:`KubeReader` over the official ``kubernetes`` client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client  # imported lazily: heavy, and only the operator needs it

        self._core = client.CoreV1Api(api_client)
        self._api_exception: type[Exception] = client.ApiException

    def service_account_pull_secrets(self, namespace: str, name: str) -> list[str] | None:
        try:
            sa = self._core.read_namespaced_service_account(name, namespace, _request_timeout=3)
        except self._api_exception as e:
            logger.info("service account %s/%s not readable: %s", namespace, name, _status(e))
            return None
        return [s.name for s in (sa.image_pull_secrets or []) if s.name]

    def secret(self, namespace: str, name: str) -> tuple[str, Mapping[str, str]] | None:
        try:
            secret = self._core.read_namespaced_secret(name, namespace, _request_timeout=3)
        except self._api_exception as e:
            logger.info("pull secret %s/%s not readable: %s", namespace, name, _status(e))
            return None
        data = {str(k): str(v) for k, v in (secret.data or {}).items()}
        return str(secret.type or ""), data


def _status(e: Exception) -> str:
    return str(getattr(e, "status", "") or e)


class NamespaceCredentials:
    """Implements :class:`controller.pinning.Credentials`."""

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
        now = self._clock()
        hit = self._sa_cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        found = await asyncio.to_thread(self._reader.service_account_pull_secrets, namespace, name)
        value = found or []
        self._sa_cache[key] = (now + self._ttl, value)
        return value

    async def _keychain(self, namespace: str, name: str) -> Keychain | None:
        key = (namespace, name)
        now = self._clock()
        hit = self._secret_cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        keychain = await asyncio.to_thread(self._read_keychain, namespace, name)
        self._secret_cache[key] = (now + self._ttl, keychain)
        return keychain

    def _read_keychain(self, namespace: str, name: str) -> Keychain | None:
        import base64

        from controller import errors

        found = self._reader.secret(namespace, name)
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
