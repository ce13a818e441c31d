"""Building the registry client's requests: pure functions, no I/O (lightkube's
``prepare_request``); :class:`~controller.registry.sender.Sender` is the only place that sends.
The token requests are built by :mod:`.auth`.

Every request asks for the body as it is (``Accept-Encoding: identity``) and names kitpin as
its ``User-Agent``. A redirect keeps the method and headers but drops ``Authorization`` when
the origin changes, and its target passes the host policy like the first host.
"""

from __future__ import annotations

from typing import Final, Literal

import httpx

from controller import artifacts, errors, refs
from controller.registry import auth, hosts

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_ENDPOINT",
    "build_blob_request",
    "build_manifest_request",
    "build_ping_request",
    "build_redirect_request",
    "endpoint_for",
]

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_ENDPOINT: Final = "registry-1.docker.io"


def endpoint_for(registry: str) -> str:
    """The ``host[:port]`` that serves ``registry``'s API: Docker Hub is
    ``registry-1.docker.io``."""
    return DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry


def _base_headers(accept: str, authorization: str | None) -> dict[str, str]:
    headers = {"Accept": accept, "Accept-Encoding": "identity", "User-Agent": auth.USER_AGENT}
    if authorization is not None:
        headers["Authorization"] = authorization
    return headers


def build_manifest_request(
    policy: hosts.HostPolicy,
    ref: refs.Reference,
    *,
    authorization: str | None = None,
    method: Literal["GET", "HEAD"] = "GET",
) -> httpx.Request:
    """``GET /v2/<repository>/manifests/<digest or tag>`` accepting OCI and Docker manifests
    and indexes; ``method="HEAD"``: the same request for the ``Docker-Content-Digest`` only
    (same ``Accept``: a registry answers HEAD with the digest of what GET would serve)."""
    scheme = policy.scheme_for(ref.registry)
    url = (
        f"{scheme}://{endpoint_for(ref.registry)}/v2/{ref.repository}"
        f"/manifests/{ref.digest or ref.tag}"
    )
    accept = ", ".join(artifacts.ACCEPTED_MEDIA_TYPES)
    return httpx.Request(method, url, headers=_base_headers(accept, authorization))


def build_blob_request(
    policy: hosts.HostPolicy,
    ref: refs.Reference,
    digest: str,
    *,
    authorization: str | None = None,
) -> httpx.Request:
    """``GET /v2/<repository>/blobs/<digest>``."""
    scheme = policy.scheme_for(ref.registry)
    url = f"{scheme}://{endpoint_for(ref.registry)}/v2/{ref.repository}/blobs/{digest}"
    return httpx.Request("GET", url, headers=_base_headers("*/*", authorization))


def build_ping_request(url: httpx.URL) -> httpx.Request:
    """``GET /v2/`` (the API version check) of ``url``'s endpoint: same scheme, host and port,
    never an ``Authorization``."""
    ping = httpx.URL(scheme=url.scheme, host=hosts.host_of(url), port=url.port, path="/v2/")
    return httpx.Request("GET", ping, headers=_base_headers("application/json", None))


def build_redirect_request(
    previous: httpx.Request, location: str | None, *, policy: hosts.HostPolicy, registry: str
) -> httpx.Request:
    """The request that follows a redirect to ``location``: same method (a HEAD stays a HEAD)
    and headers, minus ``Authorization`` when the origin changes. Refuses
    (``HostNotAllowedError``) a target that is not https, unless its host is configured plain
    HTTP, and one the host policy denies."""
    if not location:
        raise errors.BadResponseError(
            f"{registry} answered a redirect without a Location; the registry is misbehaving",
            registry=registry,
        )
    try:
        target = previous.url.join(location)
    except httpx.InvalidURL as e:
        raise errors.BadResponseError(
            f"{registry} redirected to something that is not a URL; the registry is misbehaving",
            registry=registry,
        ) from e
    host = hosts.host_of(target)
    if target.scheme in ("http", "https"):
        try:
            hosts.split_host_port(hosts.join_host_port(host, target.port))
        except ValueError:
            raise errors.HostNotAllowedError(
                f"{registry} redirected to a URL without a valid host; kitpin follows "
                "redirects only to a host[:port]",
                registry=registry,
            ) from None
    host_port = hosts.join_host_port(host, target.port)
    if target.scheme == "http":
        if not policy.allows_plain_http(host, target.port or 80):
            raise errors.HostNotAllowedError(
                f"{registry} redirected to http://{host_port}, over plain HTTP; kitpin follows "
                f"plain-HTTP redirects only to hosts configured plainHTTP in the registry config",
                registry=registry,
            )
    elif target.scheme != "https":
        raise errors.HostNotAllowedError(
            f"{registry} redirected to a {target.scheme or 'relative'} URL; kitpin follows "
            "https redirects only",
            registry=registry,
        )
    policy.check(host_port, purpose="redirect")
    headers = httpx.Headers(previous.headers)
    headers["Host"] = target.netloc.decode("ascii")
    if _origin(target) != _origin(previous.url):
        headers.pop("Authorization", None)
    return httpx.Request(previous.method, target, headers=headers)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, hosts.host_of(url), hosts.port_of(url)
