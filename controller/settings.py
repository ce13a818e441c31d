"""The one place that reads files, flags and the environment into settings dataclasses.

Settings live beside the code they configure (one dataclass per concern):
``pinning.AdmissionSettings``, ``sites.SitesSettings``, ``resolver.ResolverSettings``,
``tags.TagsSettings``, :class:`ServerSettings`, ``registry.hosts.HostPolicy`` and the
central ``registry.credentials.Keychain``. This module only loads them, from two YAML files:

- the settings file (``kitpin run --settings FILE``, ``--settings`` of ``pin`` and
  ``check``; the Helm chart's ConfigMap): :data:`SETTINGS_KEYS`, read by
  :func:`load_settings_file`;
- the registry config (``--registry-config FILE``): :data:`REGISTRY_KEYS`, read by
  ``registry.hosts.load_registry_config``.

Every key is listed once in those tables, with the dataclass field it sets; the field's
docstring is the key's documentation. ``docs/settings.md`` is generated from them
(``hack/settingsdoc.py``; ``make verify`` fails when it is stale). A key missing from the
tables is refused as unknown: a typo must not silently fall back to a default. YAML is read
by :mod:`controller.yamlload` (errors name file, line and column; dates stay strings).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from controller import errors, resolver, sites, yamlload
from controller.admission import pinning
from controller.registry import hosts
from controller.registry.credentials import Keychain
from controller.tags import TagsSettings
from controller.types import is_int

WEBHOOK_TIMEOUT_MAX: Final = 30
"""The apiserver's limit on a webhook's ``timeoutSeconds`` (1 to 30)."""


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

    webhook_timeout: int = 10
    """The ``timeoutSeconds`` of the webhook configurations that call kitpin: how long the
    apiserver waits for an answer (1 to 30). kitpin does not set it; it only checks that
    ``deadlineSeconds`` stays below it, as the chart does (the chart writes its
    ``webhook.timeoutSeconds`` here). Default 10: the chart's default and the apiserver's.
    ``kitpin run --dev`` lets kopf create the configurations, with 30."""

    admission: pinning.AdmissionSettings = field(default_factory=pinning.AdmissionSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    resolver: resolver.ResolverSettings = field(default_factory=resolver.ResolverSettings)
    hosts: hosts.HostPolicy = field(default_factory=hosts.HostPolicy)
    keychain: Keychain | None = None
    tags: TagsSettings = field(default_factory=TagsSettings)
    """The ``tags:`` and ``drift:`` sections: ModelKitTag records and the drift watch."""


Kind = Literal[
    "choice",
    "seconds",
    "number",
    "integer",
    "port",
    "boolean",
    "string",
    "strings",
    "path",
    "networks",
    "mappings",
    "registries",
]
"""What a key holds (:data:`KIND_TEXT` says it in words)."""

KIND_TEXT: Final[Mapping[Kind, str]] = {
    "choice": "one of",
    "seconds": "number of seconds",
    "number": "number",
    "integer": "integer",
    "port": "TCP port (1-65535)",
    "boolean": "true or false",
    "string": "string",
    "strings": "list of strings",
    "path": "file path",
    "networks": "list of CIDR networks",
    "mappings": "list of mappings",
    "registries": "mapping of host[:port] to a registry's settings",
}


@dataclass(frozen=True, kw_only=True)
class Key:
    """One key of a settings file and the dataclass field it sets. The field's docstring is
    the key's documentation (``hack/settingsdoc.py`` renders ``docs/settings.md``)."""

    path: str
    """Where the key is: ``mode``, ``cache.ttlSeconds``; ``sites.extra[].kind`` for a key of
    each item of a list, ``registries.<host>.caFile`` for one of each entry of a mapping."""
    kind: Kind
    owner: type
    """The dataclass that holds the value."""
    field: str
    """Its field the key sets."""
    choices: tuple[str, ...] = ()
    """The values a ``choice`` may take."""
    default: str | None = None
    """The default as written in the file, when the field's own default would mislead."""
    flag: str = ""
    """The command-line flag that sets the same, if any (Markdown: the flag in backticks,
    the commands that have it in parentheses when not all do)."""
    note: str = ""
    """How the key differs from the field, said after the field's docstring."""

    @property
    def section(self) -> str:
        """Where the key is: ``cache`` for ``cache.ttlSeconds``, ``sites.extra[]`` for
        ``sites.extra[].kind``; ``""`` for a top-level key."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The key's own name: ``ttlSeconds`` for ``cache.ttlSeconds``."""
        return self.path.rpartition(".")[2]


@dataclass(frozen=True, kw_only=True)
class Section:
    """A mapping of a settings file (``cache:``), or its top level (``name=""``)."""

    name: str
    about: str
    """What the section is for, one paragraph."""


SETTINGS_SECTIONS: Final = (
    Section(name="", about="How the webhooks behave and how long one review may take."),
    Section(
        name="cache",
        about="The resolver's cache of tag → digest answers "
        "(`controller.resolver.ResolverSettings`).",
    ),
    Section(
        name="sites",
        about="Where kitpin looks for ModelKit references besides the built-in places "
        "(`controller.sites.SitesSettings`).",
    ),
    Section(
        name="sites.extra[]",
        about="Each item of `sites.extra`: a platform team's own resource that holds ModelKit "
        "references (`controller.sites.ExtraSite`), no code needed.",
    ),
    Section(
        name="server",
        about="How `kitpin run` serves: who may call it, where the probes are, how it stops "
        "(`controller.settings.ServerSettings`). Flags of `kitpin run` override the file.",
    ),
    Section(
        name="tags",
        about="ModelKitTag records: what every tag resolved to (docs/tags.md, "
        "`controller.tags.TagsSettings`).",
    ),
    Section(
        name="drift",
        about="The drift watch: on the one replica holding the Lease, re-check the tags in use "
        "and report moves (`controller.tags.TagsSettings`).",
    ),
)

_A = pinning.AdmissionSettings
_R = resolver.ResolverSettings
_T = TagsSettings

SETTINGS_KEYS: Final = (
    Key(
        path="mode",
        kind="choice",
        owner=_A,
        field="mode",
        choices=("pin", "pods-only", "validate-only"),
    ),
    Key(path="failure", kind="choice", owner=_A, field="failure", choices=("deny", "warn")),
    Key(
        path="deadlineSeconds",
        kind="seconds",
        owner=_A,
        field="deadline",
        flag="`--deadline` (`pin`, `check`)",
        note="Also the resolver's deadline (`ResolverSettings.deadline`). Must be above 0 and "
        "below `webhookTimeoutSeconds`.",
    ),
    Key(path="webhookTimeoutSeconds", kind="integer", owner=Settings, field="webhook_timeout"),
    Key(
        path="ignoredNamespaces",
        kind="strings",
        owner=_A,
        field="ignored_namespaces",
        default="[]",
        note="The names listed are added to kube-system, kube-public and kube-node-lease, "
        "which are always ignored.",
    ),
    Key(path="cache.ttlSeconds", kind="seconds", owner=_R, field="ttl"),
    Key(path="cache.negativeTtlSeconds", kind="seconds", owner=_R, field="negative_ttl"),
    Key(path="cache.staleIfErrorSeconds", kind="seconds", owner=_R, field="stale_if_error"),
    Key(
        path="cache.refreshAhead",
        kind="number",
        owner=_R,
        field="refresh_ahead",
        note="Above 0 and at most 1. How refresh-ahead works: the docstring of "
        "`controller/resolver.py`.",
    ),
    Key(path="cache.maxEntries", kind="integer", owner=_R, field="max_entries"),
    Key(path="cache.enabled", kind="boolean", owner=_R, field="enabled"),
    Key(path="sites.envNames", kind="strings", owner=sites.SitesSettings, field="env_names"),
    Key(
        path="sites.kitCliImages",
        kind="strings",
        owner=sites.SitesSettings,
        field="kit_cli_images",
    ),
    Key(
        path="sites.uriPrefixes",
        kind="strings",
        owner=sites.SitesSettings,
        field="uri_prefixes",
        default="[]",
    ),
    Key(
        path="sites.disabledDefaults",
        kind="strings",
        owner=sites.SitesSettings,
        field="disabled_defaults",
        default="[]",
        note="The shipped defaults, their paths and where each comes from: docs/sites.md.",
    ),
    Key(path="sites.extra", kind="mappings", owner=sites.SitesSettings, field="extra_sites"),
    Key(path="sites.extra[].group", kind="string", owner=sites.ExtraSite, field="group"),
    Key(path="sites.extra[].kind", kind="string", owner=sites.ExtraSite, field="kind"),
    Key(path="sites.extra[].versions", kind="strings", owner=sites.ExtraSite, field="versions"),
    Key(path="sites.extra[].paths", kind="strings", owner=sites.ExtraSite, field="paths"),
    Key(path="sites.extra[].podSpecs", kind="strings", owner=sites.ExtraSite, field="pod_specs"),
    Key(
        path="sites.extra[].grammar",
        kind="choice",
        owner=sites.ExtraSite,
        field="grammar",
        choices=("kit", "image"),
    ),
    Key(path="sites.extra[].prefix", kind="string", owner=sites.ExtraSite, field="prefix"),
    Key(
        path="sites.extra[].expectsModelKit",
        kind="boolean",
        owner=sites.ExtraSite,
        field="expects_modelkit",
    ),
    Key(
        path="server.clientCAFile",
        kind="path",
        owner=ServerSettings,
        field="client_ca",
        flag="`--client-ca`",
    ),
    Key(
        path="server.clientNames",
        kind="strings",
        owner=ServerSettings,
        field="client_names",
        flag="`--client-name` (repeatable)",
    ),
    Key(
        path="server.probePort",
        kind="port",
        owner=ServerSettings,
        field="probe_port",
        flag="`--probe-port`",
    ),
    Key(path="server.drainSeconds", kind="seconds", owner=ServerSettings, field="drain_seconds"),
    Key(
        path="server.shutdownSeconds",
        kind="seconds",
        owner=ServerSettings,
        field="shutdown_seconds",
    ),
    Key(path="tags.records", kind="boolean", owner=_T, field="records"),
    Key(path="tags.flushIntervalSeconds", kind="seconds", owner=_T, field="flush_interval"),
    Key(path="tags.queueSize", kind="integer", owner=_T, field="queue_size"),
    Key(path="tags.observationsPerTag", kind="integer", owner=_T, field="observations_per_tag"),
    Key(
        path="tags.checkedWriteEverySeconds",
        kind="seconds",
        owner=_T,
        field="checked_write_every",
    ),
    Key(path="drift.enabled", kind="boolean", owner=_T, field="drift"),
    Key(path="drift.intervalSeconds", kind="seconds", owner=_T, field="drift_interval"),
    Key(path="drift.budgetPerMinute", kind="integer", owner=_T, field="budget_per_minute"),
    Key(path="drift.leaseName", kind="string", owner=_T, field="lease_name"),
    Key(path="drift.leaseDurationSeconds", kind="seconds", owner=_T, field="lease_duration"),
    Key(
        path="drift.leaseRenewDeadlineSeconds",
        kind="seconds",
        owner=_T,
        field="lease_renew_deadline",
    ),
    Key(path="drift.leaseRetrySeconds", kind="seconds", owner=_T, field="lease_retry"),
)
"""Every key of the settings file, in the order docs/settings.md shows them."""

REGISTRY_SECTIONS: Final = (
    Section(
        name="",
        about="Which hosts kitpin may contact (`controller.registry.hosts.HostPolicy`). An "
        "empty file means the defaults.",
    ),
    Section(
        name="registries.<host>",
        about="Each entry of `registries`, keyed by `host[:port]` "
        "(`controller.registry.hosts.RegistryHostConfig`). A key without a port that is "
        "not plain HTTP also applies to `host:443`; plain HTTP is granted only to the exact "
        "registry named.",
    ),
)

REGISTRY_KEYS: Final = (
    Key(path="registries", kind="registries", owner=hosts.HostPolicy, field="registries"),
    Key(
        path="registries.<host>.plainHTTP",
        kind="boolean",
        owner=hosts.RegistryHostConfig,
        field="plain_http",
        flag="`--plain-http-registry HOST[:PORT]` (`run`, `pin`, `check`), `--plain-http` "
        "(`resolve`: its registry; `pin`, `check`: every registry named)",
    ),
    Key(
        path="registries.<host>.caFile",
        kind="path",
        owner=hosts.RegistryHostConfig,
        field="ca_file",
        note="The file must exist when the config is read.",
    ),
    Key(
        path="allowedRegistries",
        kind="strings",
        owner=hosts.HostPolicy,
        field="allowed_registries",
    ),
    Key(
        path="deniedNetworks",
        kind="networks",
        owner=hosts.HostPolicy,
        field="denied_networks",
        note="Replaces the default list: keep the metadata networks in it.",
    ),
    Key(
        path="deniedHostnames",
        kind="strings",
        owner=hosts.HostPolicy,
        field="denied_hostnames",
        note="Replaces the default list.",
    ),
)
"""Every key of the registry config (``--registry-config``), read by
``registry.hosts.load_registry_config``."""


def _keys(section: str) -> dict[str, Key]:
    """The keys of ``section`` (``"cache"``), by name."""
    return {key.name: key for key in SETTINGS_KEYS if key.section == section}


_TOP_KEYS: Final = {key.path.partition(".")[0] for key in SETTINGS_KEYS}
_CACHE_KEYS: Final = set(_keys("cache"))
_SITES_KEYS: Final = set(_keys("sites"))
_SERVER_KEYS: Final = set(_keys("server"))
_TAGS_KEYS: Final = _keys("tags")
_DRIFT_KEYS: Final = _keys("drift")


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
    webhook_timeout = Settings.webhook_timeout
    if "webhookTimeoutSeconds" in top:
        webhook_timeout = top["webhookTimeoutSeconds"]
        if not is_int(webhook_timeout) or not 1 <= webhook_timeout <= WEBHOOK_TIMEOUT_MAX:
            raise _fail(
                source,
                "webhookTimeoutSeconds",
                f"expected an integer from 1 to {WEBHOOK_TIMEOUT_MAX} (the apiserver's limits "
                f"on a webhook's timeoutSeconds), got {webhook_timeout!r}",
            )
    if "deadlineSeconds" in top:
        admission = replace(
            admission, deadline=_number(top["deadlineSeconds"], source, "deadlineSeconds")
        )
    _check_deadline(
        admission.deadline, webhook_timeout, given="deadlineSeconds" in top, source=source
    )
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
    if "uriPrefixes" in site_doc:
        prefixes = _strings(site_doc["uriPrefixes"], source, "sites.uriPrefixes")
        try:
            site_settings = replace(site_settings, uri_prefixes=sites.check_uri_prefixes(prefixes))
        except errors.ConfigError as e:
            raise _fail(source, "sites.uriPrefixes", str(e).partition(": ")[2]) from e
    if "disabledDefaults" in site_doc:
        names = _strings(site_doc["disabledDefaults"], source, "sites.disabledDefaults")
        try:
            disabled = sites.check_disabled_defaults(names)
        except errors.ConfigError as e:
            raise _fail(source, "sites.disabledDefaults", str(e).partition(": ")[2]) from e
        site_settings = replace(site_settings, disabled_defaults=disabled)
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
    return Settings(
        webhook_timeout=webhook_timeout,
        admission=admission,
        resolver=resolver_settings,
        server=server,
        tags=tags,
    )


def _check_deadline(deadline: float, webhook_timeout: int, *, given: bool, source: str) -> None:
    """``deadlineSeconds`` must be above 0 and below the webhook's ``timeoutSeconds``, the
    chart's rule (``templates/validate.yaml``): kitpin must answer with the real cause before
    the apiserver gives up on the webhook and applies its failurePolicy."""
    if deadline <= 0:
        raise _fail(source, "deadlineSeconds", f"must be > 0 seconds, got {deadline:g}")
    if deadline >= webhook_timeout:
        shown = f"{deadline:g}" if given else f"{deadline:g} (the default)"
        raise _fail(
            source,
            "deadlineSeconds",
            f"{shown} must be below the webhook timeout, webhookTimeoutSeconds "
            f"({webhook_timeout}): kitpin must answer with the real cause before the apiserver "
            "gives up on the webhook; lower deadlineSeconds, or raise the webhook configurations' "
            "timeoutSeconds and webhookTimeoutSeconds together (the chart: "
            f"webhook.timeoutSeconds; at most {WEBHOOK_TIMEOUT_MAX})",
        )


def _tags_settings(tags_doc: object, drift_doc: object, source: str) -> TagsSettings:
    kwargs: dict[str, Any] = {}
    for section, document, keys in (
        ("tags", tags_doc, _TAGS_KEYS),
        ("drift", drift_doc, _DRIFT_KEYS),
    ):
        doc = _check_keys(document, set(keys), source, section)
        for name, value in doc.items():
            key = keys[name]
            where = key.path
            if key.kind == "boolean":
                if not isinstance(value, bool):
                    raise _fail(source, where, "expected true or false")
            elif key.kind == "integer":
                if not is_int(value) or value <= 0:
                    raise _fail(source, where, f"expected a positive integer, got {value!r}")
            elif key.kind == "string":
                if not isinstance(value, str) or not value:
                    raise _fail(source, where, "expected a non-empty string")
            else:
                value = _number(value, source, where)
                if value <= 0:
                    raise _fail(source, where, f"must be > 0, got {value:g}")
            kwargs[key.field] = value
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
    """Read and check the settings file at ``path`` (docs/settings.md). ConfigError names the
    file, and the line and column of a YAML mistake or the key at fault."""
    try:
        document = yamlload.load_file(path)
    except OSError as e:
        raise errors.ConfigError(
            f"cannot read settings file {path}: {e.strerror or e}; check the path (--settings)"
        ) from e
    except yamlload.LoadError as e:
        raise errors.ConfigError(str(e)) from e
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
