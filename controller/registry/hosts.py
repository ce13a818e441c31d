"""Which hosts kitpin may contact, and how: the host policy. Pure, no I/O except
:func:`load_registry_config` reading its file.

Every request the registry client sends goes through :class:`HostPolicy` first: the registry a
reference names, each redirect target (blob storage), each token realm. The policy refuses

- hosts in ``denied_networks`` (by default link-local incl. the cloud metadata address
  ``169.254.169.254``, ``fd00:ec2::254``, Alibaba's ``100.100.100.200``, ``0.0.0.0/8``,
  multicast and broadcast), checked for IP literals here and for DNS answers through
  :meth:`HostPolicy.check_resolved` (the client does the lookup: :mod:`.dns`). An IPv6
  address that carries an IPv4 address a gateway or the kernel may deliver to
  (:func:`embedded_ipv4`: IPv4-mapped ``::ffff:a9fe:a9fe``, IPv4-compatible ``::a9fe:a9fe``,
  NAT64 ``64:ff9b::a9fe:a9fe``, 6to4 ``2002:a9fe:a9fe::``, Teredo) is judged as that IPv4
  address too,
- hosts in ``denied_hostnames`` (``metadata.google.internal``, ``metadata``, ...),
- names whose ``xn--`` labels are no valid internationalised name (httpx cannot build a
  request to one),
- registries outside ``allowed_registries`` when that list is set. The allowlist applies to
  the registry a reference names (purpose ``"registry"``), not to the blob storage a registry
  redirects to or the token service it points at: those are the registry's choice, and still
  pass the deny lists.

Loopback and private ranges are allowed by default: self-hosted registries live there.

Per-registry settings (:class:`RegistryHostConfig`) say whether a registry is served over plain
HTTP and which CA bundle verifies its certificate. Keys are normalised ``host[:port]`` (host
lowercased, IPv6 in brackets). A key without a port that is not plain HTTP also applies to
``host:443``, and vice versa; plain HTTP is granted only to the exact registry configured.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

import httpx

from controller import errors, yamlload

__all__ = [
    "DEFAULT_DENIED_HOSTNAMES",
    "DEFAULT_DENIED_NETWORKS",
    "HostPolicy",
    "IPNetwork",
    "Purpose",
    "RegistryHostConfig",
    "embedded_ipv4",
    "host_of",
    "host_port_of",
    "is_ip",
    "join_host_port",
    "load_registry_config",
    "normalise_host_port",
    "port_of",
    "split_host_port",
]

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Purpose = Literal["registry", "registry endpoint", "redirect", "token realm"]
"""Why a host is contacted. ``"registry"``: the registry a reference names (the allowlist
applies); ``"registry endpoint"``: the API host serving it (``registry-1.docker.io`` for
``docker.io``); ``"redirect"``: a redirect target; ``"token realm"``: a token service."""

DEFAULT_DENIED_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, ...)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches local services on Linux
        "::/128",  # IPv6 unspecified
        "224.0.0.0/4",  # IPv4 multicast
        "ff00::/8",  # IPv6 multicast
        "255.255.255.255/32",  # broadcast
    )
)
"""Networks no registry, redirect or token realm may resolve into (``deniedNetworks``)."""

DEFAULT_DENIED_HOSTNAMES: Final[frozenset[str]] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
"""Names of cloud metadata services, refused before any DNS lookup."""

_Fail = Callable[[str, str], errors.ConfigError]
"""``fail(field, problem)``: the ConfigError for a field of the file being loaded."""


@dataclass(frozen=True, kw_only=True)
class RegistryHostConfig:
    """How to talk to one registry."""

    plain_http: bool = False
    """Speak plain HTTP instead of HTTPS. Default False: only for registries on a trusted
    network (a local test registry); credentials and digests travel unprotected."""

    ca_file: str | None = None
    """PEM bundle that verifies this registry's certificate instead of the system CAs.
    Default None: the system trust store."""


_DEFAULT_HOST_CONFIG: Final = RegistryHostConfig()


def split_host_port(host_port: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) into a lowercased host without brackets and
    the port, or None. Raises ``ValueError`` on a malformed value."""
    text = host_port.strip().lower()
    if not text:
        raise ValueError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {host_port!r}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise ValueError(f"unexpected text after ']' in {host_port!r}")
        ipaddress.IPv6Address(host.split("%", 1)[0])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"IPv6 address {host_port!r} must be written in brackets: [addr]:port")
    else:
        host, port_text = text, None
    host = host.rstrip(".")
    if not host or any(c in host for c in "/@?#\\ \t"):
        raise ValueError(f"{host_port!r} is not a host[:port]")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} in {host_port!r} is not a number from 1 to 65535")
    return host, int(port_text)


def join_host_port(host: str, port: int | None) -> str:
    """The normalised ``host[:port]`` form (IPv6 literals in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def normalise_host_port(host_port: str) -> str:
    """``host[:port]`` lowercased, trailing dot dropped, IPv6 bracketed. ``ValueError`` if
    malformed."""
    return join_host_port(*split_host_port(host_port))


def port_of(url: httpx.URL) -> int:
    """The port ``url`` addresses: its own, else its scheme's default (httpx drops default
    ports)."""
    return url.port or (443 if url.scheme == "https" else 80)


def host_of(url: httpx.URL) -> str:
    """``url``'s host as it goes on the wire: lowercase ASCII, an internationalised name in
    its ``xn--`` form, IPv6 without brackets. Never raises: unlike ``httpx.URL.host``, which
    decodes ``xn--`` labels and raises ``idna.IDNAError`` (a ``ValueError``) on a malformed
    one that a registry can put in a redirect or a token realm."""
    return url.raw_host.decode("ascii", "backslashreplace").lower()


def host_port_of(url: httpx.URL) -> str:
    """``host:port`` of a URL, the port always explicit (:func:`port_of`)."""
    return join_host_port(host_of(url), port_of(url))


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP literal (IPv6 without brackets, a zone allowed), not a name."""
    return _ip(host) is not None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _idna_error(host: str) -> str | None:
    """Why ``host``'s ``xn--`` labels are no internationalised name, or None. httpx decodes
    them for every request it builds (``httpx.URL.host``) and raises ``idna.IDNAError`` on a
    malformed one, which a reference, a redirect or a token realm may carry."""
    if "xn--" not in host:
        return None
    try:
        httpx.URL(f"https://{host}/").host  # noqa: B018 - decoding it is the check
    except (httpx.InvalidURL, ValueError) as e:  # idna.IDNAError is a UnicodeError
        return str(e) or e.__class__.__name__
    return None


_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_NAT64_PREFIXES: Final = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # RFC 6052, the well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215, local use (commonly a /96 in it)
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries and that a packet to it may end up at:
    IPv4-mapped (``::ffff:a.b.c.d``, the kernel's own IPv4 socket), IPv4-compatible
    (``::a.b.c.d``, deprecated; ``::`` and ``::1`` excluded), NAT64 (``64:ff9b::a.b.c.d``,
    and the last 32 bits in ``64:ff9b:1::/48``), 6to4 (``2002:AABB:CCDD::``) and Teredo (the
    server and the client address). Judged by the host policy like the IPv6 address itself."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        found.append(low32)
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class HostPolicy:
    """Which hosts may be contacted and how. Immutable; build it once at start-up."""

    registries: Mapping[str, RegistryHostConfig] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Per-registry settings keyed by normalised ``host[:port]``. Default: none, every
    registry is HTTPS verified by the system CAs."""

    denied_networks: tuple[IPNetwork, ...] = DEFAULT_DENIED_NETWORKS
    """No contacted host may be, or resolve to, an address in these networks. Default:
    :data:`DEFAULT_DENIED_NETWORKS` (metadata services, link-local, multicast)."""

    denied_hostnames: frozenset[str] = DEFAULT_DENIED_HOSTNAMES
    """Host names refused outright (lowercase). Default: :data:`DEFAULT_DENIED_HOSTNAMES`."""

    allowed_registries: tuple[str, ...] | None = None
    """Glob patterns (``fnmatch``, e.g. ``*.example.com``, ``127.0.0.1:*``) matched against a
    reference's registry ``host[:port]``. Default None: any registry not denied."""

    def __post_init__(self) -> None:
        normalised: dict[str, RegistryHostConfig] = {}
        for key, config in self.registries.items():
            try:
                normalised[normalise_host_port(key)] = config
            except ValueError as e:
                raise errors.ConfigError(
                    f"host policy: registry key {key!r} is not host[:port]: {e}"
                ) from e
        object.__setattr__(self, "registries", MappingProxyType(normalised))
        object.__setattr__(
            self,
            "denied_hostnames",
            frozenset(h.lower().rstrip(".") for h in self.denied_hostnames),
        )
        if self.allowed_registries is not None:
            object.__setattr__(
                self, "allowed_registries", tuple(p.lower() for p in self.allowed_registries)
            )

    def config_for(self, registry: str) -> RegistryHostConfig:
        """The settings for ``registry`` (``host[:port]``); defaults when not configured.

        A TLS entry for ``host`` also serves ``host:443`` and the other way round; a plain
        HTTP entry for ``host`` also serves ``host:80`` (how a URL without port is addressed).
        """
        key = normalise_host_port(registry)
        found = self.registries.get(key)
        if found is not None:
            return found
        host, port = split_host_port(key)
        if port is None:
            alternate = self.registries.get(join_host_port(host, 443))
            if alternate is not None and not alternate.plain_http:
                return alternate
        else:
            alternate = self.registries.get(join_host_port(host, None))
            if alternate is not None and port == (80 if alternate.plain_http else 443):
                return alternate
        return _DEFAULT_HOST_CONFIG

    def scheme_for(self, registry: str) -> Literal["http", "https"]:
        """``"http"`` only when exactly this registry is configured ``plain_http``."""
        found = self.registries.get(normalise_host_port(registry))
        return "http" if found is not None and found.plain_http else "https"

    def allows_plain_http(self, host: str, port: int) -> bool:
        """Whether an ``http://host:port`` URL (a redirect target) may be used."""
        return self.config_for(join_host_port(host, port)).plain_http

    def check(self, host_port: str, *, purpose: Purpose) -> None:
        """Refuse ``host_port`` with :class:`errors.HostNotAllowedError` if the policy does
        not let kitpin contact it for ``purpose``. Pure: names are judged as written; call
        :meth:`check_resolved` with their DNS answers too."""
        try:
            host, _port = split_host_port(host_port)
        except ValueError as e:
            raise errors.HostNotAllowedError(
                f"the {purpose} {host_port!r} is not a valid host[:port] ({e}); "
                "nothing was contacted",
                registry=host_port,
            ) from e
        shown = join_host_port(host, _port)
        address = _ip(host)
        if address is not None:
            self._check_address(shown, address, purpose=purpose, via=None)
        elif (why := _idna_error(host)) is not None:
            raise errors.HostNotAllowedError(
                f"the {purpose} {shown} is not a valid host name ({why}); nothing was contacted",
                registry=shown,
            )
        elif host in self.denied_hostnames:
            raise errors.HostNotAllowedError(
                f"the {purpose} {shown} is a denied host name (a cloud metadata service); "
                "kitpin never contacts it. If this really is a registry, remove it from "
                "deniedHostnames in the registry config",
                registry=shown,
            )
        if purpose == "registry" and self.allowed_registries is not None:
            if not any(fnmatch.fnmatchcase(shown, p) for p in self.allowed_registries):
                raise errors.HostNotAllowedError(
                    f"registry {shown} is not in allowedRegistries "
                    f"({', '.join(self.allowed_registries) or 'empty'}); use an allowed "
                    "registry or add a pattern for it to allowedRegistries in the registry "
                    "config",
                    registry=shown,
                )

    def check_resolved(self, host: str, addresses: Iterable[str], *, purpose: Purpose) -> None:
        """Refuse ``host`` if any of the addresses its name resolved to lies in a denied
        network (a name pointing at the metadata service is as bad as the address)."""
        for text in addresses:
            address = _ip(text)
            if address is None:
                continue
            self._check_address(host, address, purpose=purpose, via=text)

    def _check_address(
        self,
        shown: str,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        *,
        purpose: Purpose,
        via: str | None,
    ) -> None:
        judged: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (address,)
        if isinstance(address, ipaddress.IPv6Address):
            judged += embedded_ipv4(address)
        for candidate in judged:
            for network in self.denied_networks:
                if candidate.version == network.version and candidate in network:
                    resolved = f" resolves to {via}, which" if via is not None else ""
                    carried = f" carries {candidate}, which" if candidate is not address else ""
                    raise errors.HostNotAllowedError(
                        f"the {purpose} {shown}{resolved}{carried} is in the denied network "
                        f"{network} (metadata services, link-local, multicast); kitpin never "
                        "contacts it. If this really is a registry, narrow deniedNetworks in "
                        "the registry config",
                        registry=shown,
                    )


# -- loading the registry config file ---------------------------------------------------------

_TOP_LEVEL_FIELDS: Final = frozenset(
    {"registries", "allowedRegistries", "deniedNetworks", "deniedHostnames"}
)
_REGISTRY_FIELDS: Final = frozenset({"plainHTTP", "caFile"})


def load_registry_config(path: str | os.PathLike[str]) -> HostPolicy:
    """Read a registry config file (YAML or JSON) into a :class:`HostPolicy`::

        registries:
          "127.0.0.1:5000": {plainHTTP: true}
          "reg.internal:443": {caFile: /etc/kitpin/ca/reg.pem}
        allowedRegistries: ["*.example.com", "127.0.0.1:*"]   # optional
        deniedNetworks: ["169.254.0.0/16"]                    # optional, replaces the default
        deniedHostnames: ["metadata.google.internal"]         # optional, replaces the default

    Raises :class:`errors.ConfigError` naming the file and the field at fault, or the line
    and column of a YAML mistake (:mod:`controller.yamlload`: dates stay strings, a key given
    twice is an error). An empty file means the defaults. Every key: docs/settings.md.
    """
    name = os.fspath(path)
    try:
        document = yamlload.load_file(name, source=f"registry config {name}")
    except OSError as e:
        raise errors.ConfigError(
            f"registry config {name}: cannot read it ({e.strerror or e}); "
            "check the path and the mounted ConfigMap"
        ) from e
    except yamlload.LoadError as e:
        raise errors.ConfigError(str(e)) from e
    if document is None:
        return HostPolicy()
    return _policy_from_document(document, name)


def _policy_from_document(document: object, name: str) -> HostPolicy:
    def fail(field_name: str, problem: str) -> errors.ConfigError:
        return errors.ConfigError(f"registry config {name}: {field_name}: {problem}")

    if not isinstance(document, dict):
        raise fail("(top level)", "must be a mapping with registries, allowedRegistries, ...")
    unknown = sorted(str(k) for k in document if k not in _TOP_LEVEL_FIELDS)
    if unknown:
        raise fail(
            unknown[0], f"unknown field; known fields are {', '.join(sorted(_TOP_LEVEL_FIELDS))}"
        )

    registries: dict[str, RegistryHostConfig] = {}
    raw_registries = document.get("registries") or {}
    if not isinstance(raw_registries, dict):
        raise fail("registries", "must be a mapping of host[:port] to settings")
    for raw_key, raw_value in raw_registries.items():
        where = f"registries[{raw_key!r}]"
        if not isinstance(raw_key, str) or "://" in raw_key or "/" in raw_key:
            raise fail(where, "key must be host[:port], without scheme or path")
        try:
            key = normalise_host_port(raw_key)
        except ValueError as e:
            raise fail(where, f"key must be host[:port]: {e}") from e
        if key in registries:
            raise fail(where, f"{key} is listed twice")
        registries[key] = _registry_from_document(raw_value, where, fail)

    allowed: tuple[str, ...] | None = None
    if "allowedRegistries" in document:
        allowed = _string_list(document["allowedRegistries"], "allowedRegistries", fail)

    denied_networks = DEFAULT_DENIED_NETWORKS
    if "deniedNetworks" in document:
        networks: list[IPNetwork] = []
        for i, text in enumerate(_string_list(document["deniedNetworks"], "deniedNetworks", fail)):
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as e:
                raise fail(f"deniedNetworks[{i}]", f"{text!r} is not a CIDR network") from e
        denied_networks = tuple(networks)

    denied_hostnames = DEFAULT_DENIED_HOSTNAMES
    if "deniedHostnames" in document:
        denied_hostnames = frozenset(
            _string_list(document["deniedHostnames"], "deniedHostnames", fail)
        )

    logger.debug("registry config %s: %d registries, allowlist %s", name, len(registries), allowed)
    return HostPolicy(
        registries=registries,
        allowed_registries=allowed,
        denied_networks=denied_networks,
        denied_hostnames=denied_hostnames,
    )


def _registry_from_document(value: object, where: str, fail: _Fail) -> RegistryHostConfig:
    if value is None:
        return RegistryHostConfig()
    if not isinstance(value, dict):
        raise fail(where, "must be a mapping with plainHTTP and/or caFile")
    for key in value:
        if key not in _REGISTRY_FIELDS:
            raise fail(
                f"{where}.{key}",
                f"unknown field; known fields are {', '.join(sorted(_REGISTRY_FIELDS))}",
            )
    plain_http = value.get("plainHTTP", False)
    if not isinstance(plain_http, bool):
        raise fail(f"{where}.plainHTTP", "must be true or false")
    ca_file = value.get("caFile")
    if ca_file is not None:
        if not isinstance(ca_file, str) or not ca_file:
            raise fail(f"{where}.caFile", "must be the path of a PEM file")
        if plain_http:
            raise fail(f"{where}.caFile", "makes no sense with plainHTTP: true; drop one")
        if not os.path.isfile(ca_file):
            raise fail(f"{where}.caFile", f"{ca_file} does not exist or is not a file")
    return RegistryHostConfig(plain_http=plain_http, ca_file=ca_file)


def _string_list(value: object, where: str, fail: _Fail) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise fail(where, "must be a list of non-empty strings")
    return tuple(value)
