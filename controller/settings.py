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
    sites:
      envNames: [MODELKIT_REF]
      kitCliImages: [ghcr.io/kitops-ml/kitops, ghcr.io/jozu-ai/kitops]
      extra:                  # a platform team's own CRDs, no code needed
        - group: ml.example.com
          kind: ModelDeployment
          paths: ["spec.models[*].source"]
          grammar: kit        # kit | image
          prefix: ""          # e.g. "kit://"

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from controller import errors, resolver, sites
from controller.admission import pinning
from controller.registry import hosts
from controller.registry.credentials import Keychain

_TOP_KEYS = {"mode", "failure", "deadlineSeconds", "ignoredNamespaces", "cache", "sites"}
_CACHE_KEYS = {
    "ttlSeconds",
    "negativeTtlSeconds",
    "staleIfErrorSeconds",
    "refreshAhead",
    "maxEntries",
    "enabled",
}
_SITES_KEYS = {"envNames", "kitCliImages", "extra"}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything `kitpin run` (and the CLI commands) need, loaded and validated."""

    admission: pinning.AdmissionSettings = field(default_factory=pinning.AdmissionSettings)
    resolver: resolver.ResolverSettings = field(default_factory=resolver.ResolverSettings)
    hosts: hosts.HostPolicy = field(default_factory=hosts.HostPolicy)
    keychain: Keychain | None = None


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
    return Settings(admission=admission, resolver=resolver_settings)


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
