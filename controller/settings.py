"""The one place that reads files, flags and the environment into settings dataclasses.

Settings live beside the code they configure (one dataclass per concern):
``pinning.AdmissionSettings``, ``sites.SitesSettings``, ``resolver.ResolverSettings``,
``registry.hosts.HostPolicy`` and the central ``registry.credentials.Keychain``. This module
only loads them. The operator's settings file (``kitpin run --settings FILE``, the Helm
chart's ConfigMap) is YAML::

    mode: pin                 # pin | pods-only | validate-only
    failure: deny             # deny | warn (admit unpinned, with a warning)
    deadlineSeconds: 8        # below the webhook timeoutSeconds (10 by default)
    ignoredNamespaces: []     # added to kube-system, kube-public, kube-node-lease
    cache:
      ttlSeconds: 60
      negativeTtlSeconds: 5
      staleIfErrorSeconds: 300
      refreshAhead: 0.8       # a hit after 0.8 x TTL also refreshes in the background; 1: off
      maxEntries: 50000
      enabled: true
    server:                   # how `kitpin run` serves (ServerSettings)
      clientCAFile: /etc/kitpin/client-ca/ca.crt   # only the apiserver may call (--client-ca)
      clientNames: []         # and its certificate must name one of these (--client-name)
      probePort: 8081         # plain HTTP /healthz, /readyz, /metrics (--probe-port)
      drainSeconds: 3         # on SIGTERM: unready, still serving, for this long
      shutdownSeconds: 15     # ... and done within this (< terminationGracePeriodSeconds)
    sites:
      envNames: [MODELKIT_REF]
      kitCliImages: [ghcr.io/kitops-ml/kitops, ghcr.io/jozu-ai/kitops]
      extra:                  # a platform team's own CRDs, no code needed
        - group: ml.example.com
          kind: ModelDeployment
          paths: ["spec.models[*].source"]
          grammar: kit        # kit | image
          prefix: ""          # e.g. "kit://"
    tags:                     # ModelKitTag records (docs/tags.md; controller.tags.TagsSettings)
      records: true           # keep one per tag resolved at admission (background, bounded)
      flushIntervalSeconds: 1
      queueSize: 10000        # tags waiting to be written; beyond: dropped and counted
      observationsPerTag: 64
      checkedWriteEverySeconds: 3600
    drift:                    # the drift watch, on the one replica holding the Lease
      enabled: true
      intervalSeconds: 300
      budgetPerMinute: 60     # registry requests per minute per registry
      leaseName: kitpin-drift-watch
      leaseDurationSeconds: 15
      leaseRenewDeadlineSeconds: 10
      leaseRetrySeconds: 2

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from controller import errors, resolver, sites
from controller.admission import pinning
from controller.registry import hosts
from controller.registry.credentials import Keychain
from controller.tags import TagsSettings
from controller.types import is_int

_TOP_KEYS = {
    "mode",
    "failure",
    "deadlineSeconds",
    "ignoredNamespaces",
    "cache",
    "sites",
    "server",
    "tags",
    "drift",
}
_CACHE_KEYS = {
    "ttlSeconds",
    "negativeTtlSeconds",
    "staleIfErrorSeconds",
    "refreshAhead",
    "maxEntries",
    "enabled",
}
_SITES_KEYS = {"envNames", "kitCliImages", "extra"}
_SERVER_KEYS = {"clientCAFile", "clientNames", "probePort", "drainSeconds", "shutdownSeconds"}
# settings key → (TagsSettings field, kind)
_TAGS_FIELDS: dict[str, tuple[str, str]] = {
    "records": ("records", "bool"),
    "flushIntervalSeconds": ("flush_interval", "seconds"),
    "queueSize": ("queue_size", "int"),
    "observationsPerTag": ("observations_per_tag", "int"),
    "checkedWriteEverySeconds": ("checked_write_every", "seconds"),
}
_DRIFT_FIELDS: dict[str, tuple[str, str]] = {
    "enabled": ("drift", "bool"),
    "intervalSeconds": ("drift_interval", "seconds"),
    "budgetPerMinute": ("budget_per_minute", "int"),
    "leaseName": ("lease_name", "str"),
    "leaseDurationSeconds": ("lease_duration", "seconds"),
    "leaseRenewDeadlineSeconds": ("lease_renew_deadline", "seconds"),
    "leaseRetrySeconds": ("lease_retry", "seconds"),
}


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How `kitpin run` serves: who may call it, where the probes are, how it stops
    (:class:`controller.admission.server.WebhookServer`). Kept here, not beside the server:
    that module imports kopf and aiohttp, which loading settings must not."""

    client_ca: Path | None = None
    """PEM CA bundle. When set, the webhook port requires a client certificate signed by it
    in the TLS handshake: the one the apiserver presents to webhooks (docs/security.md).
    Default None: any client that reaches the port may submit reviews, and so use any
    namespace's pull secrets (kitpin warns at start)."""
    client_names: tuple[str, ...] = ()
    """With ``client_ca``: the certificate's CN or a DNS name must be one of these (else
    403), for a CA that also signs other clients. Default empty: any certificate it signed."""
    probe_port: int | None = None
    """A plain HTTP port with only ``/healthz``, ``/readyz`` and ``/metrics``, for kubelet
    probes and Prometheus, which cannot present the apiserver's certificate. Default None:
    none (probes share the webhook port, which is fine without ``client_ca``)."""
    drain_seconds: float = 3.0
    """On SIGTERM, how long ``/readyz`` answers 503 while new connections are still served,
    so load balancers and endpoints stop sending before the port closes. Default 3 s: a
    load balancer that checks every second marks the replica down in time; the chart uses 5
    (kube-proxy and readiness propagation)."""
    shutdown_seconds: float = 15.0
    """The whole stop (drain, then in-flight reviews) ends within this; keep it below the
    pod's ``terminationGracePeriodSeconds`` so kitpin, not SIGKILL, ends the last reviews.
    Default 15 s: the drain plus a review's deadline (8 s) and some."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything `kitpin run` (and the CLI commands) need, loaded and validated."""

    admission: pinning.AdmissionSettings = field(default_factory=pinning.AdmissionSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    resolver: resolver.ResolverSettings = field(default_factory=resolver.ResolverSettings)
    hosts: hosts.HostPolicy = field(default_factory=hosts.HostPolicy)
    keychain: Keychain | None = None
    tags: TagsSettings = field(default_factory=TagsSettings)
    """The ``tags:`` and ``drift:`` sections: ModelKitTag records and the drift watch."""


def _fail(source: str, where: str, problem: str) -> errors.ConfigError:
    return errors.ConfigError(f"{source}: {where}: {problem}")


def _check_keys(value: object, allowed: set[str], source: str, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, where, f"expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(
            source, where, f"unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
        )
    return value


def _number(value: object, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, where, f"expected a number of seconds, got {value!r}")
    return float(value)


def _strings(value: object, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, where, "expected a list of non-empty strings")
    return tuple(value)


def parse_settings_document(document: object, *, source: str) -> Settings:
    """Build :class:`Settings` from a parsed settings document; ConfigError names the field."""
    top = _check_keys(document, _TOP_KEYS, source, "top level")
    admission = pinning.AdmissionSettings()
    if "mode" in top:
        if top["mode"] not in ("pin", "pods-only", "validate-only"):
            raise _fail(source, "mode", f"{top['mode']!r} is not pin, pods-only or validate-only")
        admission = replace(admission, mode=top["mode"])
    if "failure" in top:
        if top["failure"] not in ("deny", "warn"):
            raise _fail(source, "failure", f"{top['failure']!r} is not deny or warn")
        admission = replace(admission, failure=top["failure"])
    if "deadlineSeconds" in top:
        deadline = _number(top["deadlineSeconds"], source, "deadlineSeconds")
        if not 0 < deadline < 30:
            raise _fail(
                source, "deadlineSeconds", "must be > 0 and below the webhook timeout (max 30)"
            )
        admission = replace(admission, deadline=deadline)
    if "ignoredNamespaces" in top:
        extra_ns = _strings(top["ignoredNamespaces"], source, "ignoredNamespaces")
        admission = replace(
            admission, ignored_namespaces=admission.ignored_namespaces | frozenset(extra_ns)
        )

    site_doc = _check_keys(top.get("sites"), _SITES_KEYS, source, "sites")
    site_settings = sites.SitesSettings()
    if "envNames" in site_doc:
        site_settings = replace(
            site_settings, env_names=_strings(site_doc["envNames"], source, "sites.envNames")
        )
    if "kitCliImages" in site_doc:
        site_settings = replace(
            site_settings,
            kit_cli_images=_strings(site_doc["kitCliImages"], source, "sites.kitCliImages"),
        )
    if "extra" in site_doc:
        extra = site_doc["extra"]
        if not isinstance(extra, list):
            raise _fail(source, "sites.extra", "expected a list of sites")
        parsed: list[sites.ExtraSite] = []
        for i, item in enumerate(extra):
            try:
                parsed.append(sites.ExtraSite.from_mapping(item))
            except errors.ConfigError as e:
                raise _fail(source, f"sites.extra[{i}]", str(e)) from e
        site_settings = replace(site_settings, extra_sites=tuple(parsed))
    admission = replace(admission, sites=site_settings)

    cache = _check_keys(top.get("cache"), _CACHE_KEYS, source, "cache")
    resolver_kwargs: dict[str, Any] = {"deadline": admission.deadline}
    for key, name in (
        ("ttlSeconds", "ttl"),
        ("negativeTtlSeconds", "negative_ttl"),
        ("staleIfErrorSeconds", "stale_if_error"),
        ("refreshAhead", "refresh_ahead"),
    ):
        if key in cache:
            resolver_kwargs[name] = _number(cache[key], source, f"cache.{key}")
    if "maxEntries" in cache:
        if not isinstance(cache["maxEntries"], int) or isinstance(cache["maxEntries"], bool):
            raise _fail(source, "cache.maxEntries", "expected an integer")
        resolver_kwargs["max_entries"] = cache["maxEntries"]
    if "enabled" in cache:
        if not isinstance(cache["enabled"], bool):
            raise _fail(source, "cache.enabled", "expected true or false")
        resolver_kwargs["enabled"] = cache["enabled"]
    try:
        resolver_settings = resolver.ResolverSettings(**resolver_kwargs)
    except errors.ConfigError as e:
        raise _fail(source, "cache", str(e)) from e
    server = _server_settings(top.get("server"), source)
    tags = _tags_settings(top.get("tags"), top.get("drift"), source)
    return Settings(admission=admission, resolver=resolver_settings, server=server, tags=tags)


def _tags_settings(tags_doc: object, drift_doc: object, source: str) -> TagsSettings:
    kwargs: dict[str, Any] = {}
    for section, document, fields in (
        ("tags", tags_doc, _TAGS_FIELDS),
        ("drift", drift_doc, _DRIFT_FIELDS),
    ):
        doc = _check_keys(document, set(fields), source, section)
        for key, value in doc.items():
            name, kind = fields[key]
            where = f"{section}.{key}"
            if kind == "bool":
                if not isinstance(value, bool):
                    raise _fail(source, where, "expected true or false")
            elif kind == "int":
                if not is_int(value) or value <= 0:
                    raise _fail(source, where, f"expected a positive integer, got {value!r}")
            elif kind == "str":
                if not isinstance(value, str) or not value:
                    raise _fail(source, where, "expected a non-empty string")
            else:
                value = _number(value, source, where)
                if value <= 0:
                    raise _fail(source, where, f"must be > 0, got {value:g}")
            kwargs[name] = value
    try:
        return TagsSettings(**kwargs)
    except errors.ConfigError as e:
        raise _fail(source, "tags/drift", str(e)) from e


def _server_settings(document: object, source: str) -> ServerSettings:
    doc = _check_keys(document, _SERVER_KEYS, source, "server")
    kwargs: dict[str, Any] = {}
    if doc.get("clientCAFile") is not None:
        path = doc["clientCAFile"]
        if not isinstance(path, str) or not path:
            raise _fail(source, "server.clientCAFile", "expected the path of a PEM file")
        kwargs["client_ca"] = Path(path)
    if "clientNames" in doc:
        kwargs["client_names"] = _strings(doc["clientNames"], source, "server.clientNames")
    if doc.get("probePort") is not None:
        port = doc["probePort"]
        if not is_int(port) or not 1 <= port <= 65535:
            raise _fail(source, "server.probePort", f"expected a TCP port (1-65535), got {port!r}")
        kwargs["probe_port"] = port
    for key, name in (("drainSeconds", "drain_seconds"), ("shutdownSeconds", "shutdown_seconds")):
        if key in doc:
            kwargs[name] = _number(doc[key], source, f"server.{key}")
    try:
        return check_server_settings(ServerSettings(**kwargs))
    except errors.ConfigError as e:
        raise _fail(source, "server", str(e)) from e


def check_server_settings(
    server: ServerSettings, *, webhook_port: int | None = None
) -> ServerSettings:
    """``server``, checked: consistent values and a client CA file that loads; ConfigError
    says what to change."""
    if server.client_names and server.client_ca is None:
        raise errors.ConfigError(
            "client names (clientNames, --client-name) without a client CA (clientCAFile, "
            "--client-ca): nothing would check them; set the CA or drop the names"
        )
    if server.drain_seconds < 0 or server.shutdown_seconds <= 0:
        raise errors.ConfigError("drainSeconds must be >= 0 and shutdownSeconds > 0")
    if server.drain_seconds > server.shutdown_seconds:
        raise errors.ConfigError(
            f"drainSeconds ({server.drain_seconds:g}) exceeds shutdownSeconds "
            f"({server.shutdown_seconds:g}): the drain is part of the shutdown; raise "
            "shutdownSeconds (below the pod's terminationGracePeriodSeconds)"
        )
    if webhook_port is not None and server.probe_port == webhook_port:
        raise errors.ConfigError(
            f"the probe port ({server.probe_port}) is the webhook port: choose another"
        )
    if server.client_ca is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(
                cafile=str(server.client_ca)
            )
        except ssl.SSLError as e:  # before OSError: it is one
            raise errors.ConfigError(
                f"client CA {server.client_ca}: not a PEM certificate bundle ({e.reason or e}): "
                "give the CA that signed the apiserver's webhook client certificate"
            ) from e
        except OSError as e:
            raise errors.ConfigError(
                f"client CA {server.client_ca}: cannot read it ({e.strerror or e})"
            ) from e
    return server


def server_settings(
    base: ServerSettings,
    *,
    client_ca: str | None = None,
    client_names: Iterable[str] = (),
    probe_port: int | None = None,
    webhook_port: int | None = None,
) -> ServerSettings:
    """``base`` (the settings file's) with ``kitpin run``'s flags over it (``--client-ca``,
    ``--client-name``, ``--probe-port``), checked (:func:`check_server_settings`)."""
    changes: dict[str, Any] = {}
    if client_ca:
        changes["client_ca"] = Path(client_ca)
    names = tuple(client_names)
    if names:
        changes["client_names"] = names
    if probe_port is not None:
        if not 1 <= probe_port <= 65535:
            raise errors.ConfigError(f"--probe-port {probe_port}: expected a TCP port (1-65535)")
        changes["probe_port"] = probe_port
    return check_server_settings(replace(base, **changes), webhook_port=webhook_port)


def load_settings_file(path: str | os.PathLike[str]) -> Settings:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise errors.ConfigError(f"cannot read settings file {path}: {e.strerror}") from e
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise errors.ConfigError(f"settings file {path} is not valid YAML: {e}") from e
    return parse_settings_document(document, source=str(path))


def registry_access(
    *,
    registry_config: str | None = None,
    docker_config: str | None = None,
    plain_http: Iterable[str] = (),
) -> tuple[hosts.HostPolicy, Keychain | None]:
    """Host policy and central keychain from ``--registry-config``, ``--docker-config`` and
    ``--plain-http-registry`` (plain HTTP only for the registries named)."""
    policy = hosts.load_registry_config(registry_config) if registry_config else hosts.HostPolicy()
    plain = list(plain_http)
    if plain:
        registries = dict(policy.registries)
        for host in plain:
            try:
                key = hosts.normalise_host_port(host)
            except ValueError as e:
                raise errors.ConfigError(f"--plain-http-registry {host!r}: {e}") from e
            registries[key] = replace(
                registries.get(key, hosts.RegistryHostConfig()), plain_http=True
            )
        policy = replace(policy, registries=registries)
    keychain = Keychain.from_docker_config_dir(docker_config) if docker_config else None
    return policy, keychain


def dev_registry(dev_dir: str | os.PathLike[str] = ".dev") -> str | None:
    """``KITPIN_REGISTRY`` from ``<dev dir>/env`` written by `make dev-up`, if present."""
    env = Path(os.environ.get("KITPIN_DEV_DIR", dev_dir)) / "env"
    try:
        lines = env.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        if line.startswith("KITPIN_REGISTRY="):
            return line.split("=", 1)[1].strip().strip("'\"") or None
    return None
