"""kitpin's registry client and resolver against the real distribution registry.

ModelKits are packed by :mod:`harness.modelkit` exactly as ``kit pack`` lays them out and
pushed through the OCI distribution API; every expectation about requests is checked in the
registry's own access log, not in kitpin's bookkeeping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller import errors, refs, registry
from controller.metrics import Metrics
from controller.resolver import Resolver, ResolverSettings
from harness import modelkit
from harness.registry import RegistryServer
from harness.tokenissuer import TokenIssuer
from tests.integration.conftest import BASIC_USER, TOKEN_USER, MakeClient, plain_http_policy

pytestmark = pytest.mark.integration


def kit_ref(server: RegistryServer | str, repo: str, tag: str) -> refs.Reference:
    host = server if isinstance(server, str) else server.host
    return refs.parse(f"{host}/{repo}:{tag}", grammar="kit")


class Clock:
    """A monotonic clock the test moves by hand (the resolver's injectable ``clock``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def docker_config_dir(tmp_path: Path, host: str, user: str, password: str) -> Path:
    """A ``DOCKER_CONFIG`` directory whose ``config.json`` holds ``user:password`` for
    ``host`` the way ``docker login`` writes it (``auths`` with base64 ``auth``)."""
    directory = tmp_path / "docker"
    directory.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected_format"),
    [("kitops", "kitops-modelkit"), ("modelpack", "modelpack"), ("image", "other")],
)
async def test_resolves_each_artifact_kind_to_the_digest_pushed(
    plain_registry: RegistryServer,
    make_client: MakeClient,
    repo: str,
    kind: str,
    expected_format: str,
) -> None:
    if kind == "image":
        pushed = modelkit.push_image(plain_registry, repo, "v1")
    else:
        pushed = modelkit.push_modelkit(plain_registry, repo, "v1", fmt=kind)  # type: ignore[arg-type]
    resolver = Resolver(make_client(plain_http_policy(plain_registry)))

    resolution = await resolver.resolve(kit_ref(plain_registry, repo, "v1"))

    assert resolution.digest == pushed
    assert resolution.manifest.digest == pushed
    assert resolution.manifest.format == expected_format
    assert resolution.source == "registry"
    served = modelkit.fetch_manifest(plain_registry, repo, "v1")
    assert "sha256:" + hashlib.sha256(served).hexdigest() == pushed
    assert plain_registry.count_manifest_requests(repo, "v1") == 2  # kitpin's, then ours


async def test_kitops_modelkit_manifest_is_what_kit_writes(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    packed = modelkit.pack_modelkit(seed=3)
    pushed = modelkit.push_packed(plain_registry, repo, "v1", packed)
    client = make_client(plain_http_policy(plain_registry))

    manifest = await client.get_manifest(kit_ref(plain_registry, repo, "v1"))

    assert manifest.digest == pushed == packed.digest
    assert manifest.media_type == modelkit.MEDIA_TYPE_MANIFEST  # served Content-Type
    assert manifest.artifact_type is None  # kit <= 1.7 writes neither mediaType nor artifactType
    assert manifest.config_media_type == modelkit.MEDIA_TYPE_KIT_CONFIG
    assert manifest.annotations == {"ml.kitops.modelkit.cli-version": "1.7.0"}
    assert [layer.media_type for layer in manifest.layers] == [
        "application/vnd.kitops.modelkit.model.v1.tar",
        "application/vnd.kitops.modelkit.code.v1.tar",
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        "application/vnd.kitops.modelkit.docs.v1.tar",
    ]


async def test_modelpack_made_by_kit_carries_the_kitfile_annotation(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    packed = modelkit.pack_modelkit(fmt="modelpack")
    modelkit.push_packed(plain_registry, repo, "v1", packed)
    client = make_client(plain_http_policy(plain_registry))

    manifest = await client.get_manifest(kit_ref(plain_registry, repo, "v1"))

    assert manifest.format == "modelpack"
    assert manifest.artifact_type == modelkit.ARTIFACT_TYPE_MODELPACK_MANIFEST
    assert manifest.config_media_type == modelkit.MEDIA_TYPE_MODELPACK_CONFIG
    assert json.loads(manifest.annotations[modelkit.ANNOTATION_KITFILE]) == packed.kitfile
    assert {layer.annotations[modelkit.ANNOTATION_FILEPATH] for layer in manifest.layers} == {
        "model.bin",
        "src/train.py",
        "data/train.csv",
        "README.md",
    }


async def test_config_blob_is_the_kitfile_as_json(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    parent = f"{plain_registry.host}/{repo}-parent:v1"
    kitfile = modelkit.default_kitfile("child", model_path=parent)
    packed = modelkit.pack_modelkit(kitfile=kitfile)
    modelkit.push_packed(plain_registry, repo, "v1", packed)
    client = make_client(plain_http_policy(plain_registry))
    ref = kit_ref(plain_registry, repo, "v1")

    manifest = await client.get_manifest(ref)
    config = await client.get_config(ref, manifest)

    assert config == json.loads(packed.config.data)
    assert config["manifestVersion"] == "1.0.0"
    assert config["model"]["path"] == parent  # type: ignore[index]  # a parent reference
    assert "digest" not in config["model"]  # type: ignore[operator]  # no model layer of its own
    blob_gets = rf"/v2/{re.escape(repo)}/blobs/sha256:[0-9a-f]{{64}}"
    assert plain_registry.count_requests("GET", blob_gets) == 1


# -- TLS ----------------------------------------------------------------------------------------


async def test_tls_registry_verified_with_ca_file(
    tls_registry: RegistryServer, make_client: MakeClient, repo: str, tmp_path: Path
) -> None:
    pushed = modelkit.push_modelkit(tls_registry, repo, "v1")
    config = tmp_path / "registries.yaml"
    config.write_text(
        f'registries:\n  "{tls_registry.host}":\n    caFile: "{tls_registry.ca_file}"\n'
    )
    resolver = Resolver(make_client(registry.load_registry_config(config)))

    resolution = await resolver.resolve(kit_ref(tls_registry, repo, "v1"))

    assert resolution.digest == pushed


async def test_tls_registry_without_its_ca_is_unreachable_and_says_so(
    tls_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    modelkit.push_modelkit(tls_registry, repo, "v1")
    resolver = Resolver(make_client(registry.HostPolicy()))

    with pytest.raises(errors.UnreachableError) as caught:
        await resolver.resolve(kit_ref(tls_registry, repo, "v1"))

    assert "caFile" in caught.value.message
    assert tls_registry.host in caught.value.message
    assert tls_registry.count_manifest_requests(repo, "v1") == 0  # no handshake, no request


# -- Basic auth ---------------------------------------------------------------------------------


async def test_basic_auth_with_credentials_from_docker_config(
    basic_registry: RegistryServer, make_client: MakeClient, repo: str, tmp_path: Path
) -> None:
    pushed = modelkit.push_modelkit(basic_registry, repo, "v1", auth=BASIC_USER)
    keychain = registry.Keychain.from_docker_config_dir(
        docker_config_dir(tmp_path, basic_registry.host, *BASIC_USER)
    )
    ref = kit_ref(basic_registry, repo, "v1")
    credential = keychain.lookup(ref.registry, repository=ref.repository)
    assert credential is not None
    resolver = Resolver(make_client(plain_http_policy(basic_registry)))

    resolution = await resolver.resolve(ref, credential=credential)

    assert resolution.digest == pushed
    assert basic_registry.count_manifest_requests(repo, "v1", status=200) == 1
    # The /v2/ ping taught the Basic challenge: no anonymous manifest request first.
    assert basic_registry.count_manifest_requests(repo, "v1") == 1


@pytest.mark.parametrize("password", [None, "wrong-password"])
async def test_basic_auth_refused_is_unauthorized(
    basic_registry: RegistryServer, make_client: MakeClient, repo: str, password: str | None
) -> None:
    modelkit.push_modelkit(basic_registry, repo, "v1", auth=BASIC_USER)
    credential = (
        None
        if password is None
        else registry.Credential(username=BASIC_USER[0], password=password, source="test")
    )
    resolver = Resolver(make_client(plain_http_policy(basic_registry)))

    with pytest.raises(errors.UnauthorizedError):
        await resolver.resolve(kit_ref(basic_registry, repo, "v1"), credential=credential)

    assert basic_registry.count_manifest_requests(repo, "v1", status=200) == 0
    assert basic_registry.count_manifest_requests(repo, "v1", status=401) >= 1


# -- Bearer token auth --------------------------------------------------------------------------


def token_policy(server: RegistryServer, issuer: TokenIssuer) -> registry.HostPolicy:
    """Plain HTTP to the registry; the issuer's realm over HTTPS, verified with its CA."""
    assert issuer.ca_file is not None
    return registry.HostPolicy(
        registries={
            server.host: registry.RegistryHostConfig(plain_http=True),
            issuer.host: registry.RegistryHostConfig(ca_file=str(issuer.ca_file)),
        }
    )


def push_auth(issuer: TokenIssuer) -> modelkit.ChallengeAuth:
    return modelkit.ChallengeAuth(*TOKEN_USER, token_verify=issuer.client_ssl_context() or True)


def push_two_tags(
    token_registry: RegistryServer, token_issuer: TokenIssuer, repo: str, tmp_path: Path
) -> tuple[str, str, registry.Credential]:
    """Tags v1 and v2 of ``repo`` (two ModelKits) and the pull credential for them."""
    v1 = modelkit.push_modelkit(token_registry, repo, "v1", auth=push_auth(token_issuer))
    v2 = modelkit.push_modelkit(token_registry, repo, "v2", seed=2, auth=push_auth(token_issuer))
    credential = registry.Keychain.from_docker_config_dir(
        docker_config_dir(tmp_path, token_registry.host, *TOKEN_USER)
    ).lookup(token_registry.host, repository=repo)
    assert credential is not None
    return v1, v2, credential


async def test_bearer_token_auth_reuses_the_cached_token(
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    make_client: MakeClient,
    repo: str,
    tmp_path: Path,
) -> None:
    v1, v2, credential = push_two_tags(token_registry, token_issuer, repo, tmp_path)
    # Cache off: every resolution goes to the registry, so only the token cache can save work.
    resolver = Resolver(
        make_client(token_policy(token_registry, token_issuer)),
        settings=ResolverSettings(enabled=False),
    )
    scope = f"repository:{repo}:pull"
    before = sum(1 for r in token_issuer.requests if scope in r.scopes)

    first = await resolver.resolve(kit_ref(token_registry, repo, "v1"), credential=credential)
    again = await resolver.resolve(kit_ref(token_registry, repo, "v1"), credential=credential)
    other_tag = await resolver.resolve(kit_ref(token_registry, repo, "v2"), credential=credential)

    assert (first.digest, again.digest, other_tag.digest) == (v1, v1, v2)
    kitpin_tokens = [r for r in token_issuer.requests if scope in r.scopes][before:]
    assert len(kitpin_tokens) == 1
    assert kitpin_tokens[0].user == TOKEN_USER[0]
    assert kitpin_tokens[0].status == 200
    assert token_registry.count_manifest_requests(repo, "v1", status=200) == 2
    assert token_registry.count_manifest_requests(repo, "v2", status=200) == 1
    # No manifest request went anonymous: the /v2/ ping taught the challenge before the first,
    # and the later ones sent the cached token up front.
    manifest_gets = rf"/v2/{re.escape(repo)}/manifests/.*"
    assert token_registry.count_requests("GET", manifest_gets, status=401) == 0


async def test_bearer_token_from_an_identity_token_uses_the_refresh_grant(
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    make_client: MakeClient,
    repo: str,
    tmp_path: Path,
) -> None:
    pushed = modelkit.push_modelkit(token_registry, repo, "v1", auth=push_auth(token_issuer))
    # What `docker login` stores for an OAuth2 registry: an identity (refresh) token.
    with httpx.Client(verify=token_issuer.client_ssl_context() or True) as http:
        answer = http.post(
            token_issuer.realm,
            data={
                "grant_type": "password",
                "username": TOKEN_USER[0],
                "password": TOKEN_USER[1],
                "service": token_issuer.service,
                "access_type": "offline",
                "client_id": "docker",
            },
        )
    refresh_token = answer.raise_for_status().json()["refresh_token"]
    directory = tmp_path / "docker"
    directory.mkdir()
    document = {
        "auths": {
            token_registry.host: {
                "auth": base64.b64encode(b"<token>:").decode(),
                "identitytoken": refresh_token,
            }
        }
    }
    (directory / "config.json").write_text(json.dumps(document))
    credential = registry.Keychain.from_docker_config_dir(directory).lookup(
        token_registry.host, repository=repo
    )
    assert credential is not None and credential.identity_token == refresh_token
    resolver = Resolver(make_client(token_policy(token_registry, token_issuer)))
    before = len(token_issuer.requests)

    resolution = await resolver.resolve(kit_ref(token_registry, repo, "v1"), credential=credential)

    assert resolution.digest == pushed
    grants = token_issuer.requests[before:]
    assert [(r.method, r.grant_type, r.user, r.scopes) for r in grants] == [
        ("POST", "refresh_token", TOKEN_USER[0], (f"repository:{repo}:pull",))
    ]


async def test_bearer_token_anonymous_pull_of_private_repo_is_unauthorized(
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    make_client: MakeClient,
    repo: str,
) -> None:
    modelkit.push_modelkit(token_registry, repo, "v1", auth=push_auth(token_issuer))
    resolver = Resolver(make_client(token_policy(token_registry, token_issuer)))
    before = len(token_issuer.requests)

    with pytest.raises(errors.UnauthorizedError):
        await resolver.resolve(kit_ref(token_registry, repo, "v1"))

    anonymous = [r for r in token_issuer.requests if f"repository:{repo}:pull" in r.scopes]
    assert anonymous and anonymous[-1].user is None and anonymous[-1].status == 200
    assert token_registry.count_manifest_requests(repo, "v1", status=200) == 0
    # One manifest request, with the anonymous token; refused, no second token is fetched.
    assert token_registry.count_manifest_requests(repo, "v1") == 1
    assert [(r.user, r.status) for r in token_issuer.requests[before:]] == [(None, 200)]


async def test_first_resolution_with_token_auth_sends_one_manifest_request(
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    make_client: MakeClient,
    repo: str,
    tmp_path: Path,
) -> None:
    v1, v2, credential = push_two_tags(token_registry, token_issuer, repo, tmp_path)
    metrics = Metrics()
    client = make_client(
        token_policy(token_registry, token_issuer), on_request=metrics.count_registry_request
    )
    resolver = Resolver(client, metrics=metrics)
    pings = token_registry.count_requests("GET", "/v2/", status=401)
    issued_before = len(token_issuer.requests)

    results = await asyncio.gather(
        *(
            resolver.resolve(kit_ref(token_registry, repo, "v1"), credential=credential)
            for _ in range(20)
        ),
        resolver.resolve(kit_ref(token_registry, repo, "v2"), credential=credential),
    )

    assert {r.digest for r in results[:-1]} == {v1}
    assert results[-1].digest == v2
    # The registry's own log: one anonymous GET /v2/ (its 401 names the token realm), then
    # exactly one manifest request per reference, with the token from the start.
    assert token_registry.count_requests("GET", "/v2/", status=401) == pings + 1
    assert token_registry.count_manifest_requests(repo, "v1") == 1
    assert token_registry.count_manifest_requests(repo, "v1", status=200) == 1
    assert token_registry.count_manifest_requests(repo, "v2") == 1
    manifest_gets = rf"/v2/{re.escape(repo)}/manifests/.*"
    assert token_registry.count_requests("GET", manifest_gets, status=401) == 0
    # The issuer's own record: v1 and v2 were resolved at the same time (the resolver
    # coalesces per reference, not per repository), yet one token request was sent for both:
    # the client coalesces token fetches for the same realm, service, scope and credential.
    assert [
        (r.method, r.user, r.scopes, r.status) for r in token_issuer.requests[issued_before:]
    ] == [("GET", TOKEN_USER[0], (f"repository:{repo}:pull",), 200)]
    labels = {"registry": token_registry.host}
    assert metrics.value("kitpin_registry_requests_total", {**labels, "kind": "ping"}) == 1
    assert metrics.value("kitpin_registry_requests_total", {**labels, "kind": "token"}) == 1
    assert metrics.value("kitpin_registry_requests_total", {**labels, "kind": "manifest"}) == 2


# -- tags move ----------------------------------------------------------------------------------


async def test_moved_tag_is_seen_after_the_ttl_and_not_before(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    old = modelkit.push_modelkit(plain_registry, repo, "prod", seed=1)
    clock = Clock()
    resolver = Resolver(
        make_client(plain_http_policy(plain_registry)),
        settings=ResolverSettings(ttl=1.0, refresh_ahead=1.0),  # the bare TTL
        clock=clock,
    )
    ref = kit_ref(plain_registry, repo, "prod")
    assert (await resolver.resolve(ref)).digest == old

    new = modelkit.push_modelkit(plain_registry, repo, "prod", seed=2)  # the tag moves
    assert new != old
    clock.advance(0.9)
    cached = await resolver.resolve(ref)
    clock.advance(0.2)
    fresh = await resolver.resolve(ref)

    assert (cached.digest, cached.source) == (old, "cache")
    assert (fresh.digest, fresh.source) == (new, "registry")
    assert plain_registry.count_manifest_requests(repo, "prod") == 2


async def test_moved_tag_in_use_is_refreshed_ahead_without_a_caller_waiting(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    old = modelkit.push_modelkit(plain_registry, repo, "prod", seed=1)
    clock = Clock()
    resolver = Resolver(
        make_client(plain_http_policy(plain_registry)),
        settings=ResolverSettings(ttl=1.0, refresh_ahead=0.5),
        clock=clock,
    )
    ref = kit_ref(plain_registry, repo, "prod")
    assert (await resolver.resolve(ref)).digest == old

    new = modelkit.push_modelkit(plain_registry, repo, "prod", seed=2)  # the tag moves
    clock.advance(0.6)
    late = await resolver.resolve(ref)  # answered at once; the refresh runs behind it
    assert (late.digest, late.source) == (old, "cache")

    deadline = asyncio.get_running_loop().time() + 10
    while (hit := resolver.peek(ref)) is None or hit.digest != new:
        assert asyncio.get_running_loop().time() < deadline, "no refresh within 10 s"
        await asyncio.sleep(0.01)
    clock.advance(0.5)  # past the first answer's TTL: the refreshed entry serves
    after = await resolver.resolve(ref)
    assert (after.digest, after.source) == (new, "cache")
    assert plain_registry.count_manifest_requests(repo, "prod") == 2


async def test_retagging_an_existing_manifest_moves_the_tag(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    champion = modelkit.push_modelkit(plain_registry, repo, "champion", seed=1)
    challenger = modelkit.push_modelkit(plain_registry, repo, "challenger", seed=2)
    resolver = Resolver(
        make_client(plain_http_policy(plain_registry)), settings=ResolverSettings(enabled=False)
    )
    ref = kit_ref(plain_registry, repo, "champion")
    assert (await resolver.resolve(ref)).digest == champion

    assert modelkit.tag(plain_registry, repo, "challenger", "champion") == challenger

    assert (await resolver.resolve(ref)).digest == challenger


# -- a registry that lies -----------------------------------------------------------------------

Mutation = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]


class LyingProxy:
    """A reverse proxy in front of a real registry that mutates manifest GET answers."""

    def __init__(self, upstream: RegistryServer, mutate: Mutation) -> None:
        self.upstream = upstream
        self.mutate = mutate
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_HEAD(self) -> None:
                proxy.forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=10)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            connection.request(handler.command, handler.path, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            out = {
                k: v
                for k, v in answer.getheaders()
                if k.lower() not in ("content-length", "connection", "transfer-encoding")
            }
        finally:
            connection.close()
        if handler.command == "GET" and "/manifests/" in handler.path and answer.status == 200:
            body, out = self.mutate(body, out)
        handler.send_response(answer.status)
        for key, value in out.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def __enter__(self) -> LyingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _set_header(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    out[name] = value
    return out


def rewrite_digest_header(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    forged = "sha256:" + hashlib.sha256(b"something else entirely").hexdigest()
    return body, _set_header(headers, "Docker-Content-Digest", forged)


def flip_one_byte(body: bytes) -> bytes:
    """Change one hex digit of the config digest: still valid JSON, different bytes."""
    at = body.index(b"sha256:") + len(b"sha256:")
    return body[:at] + (b"0" if body[at : at + 1] != b"0" else b"1") + body[at + 1 :]


def alter_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return flip_one_byte(body), headers


def alter_body_and_header(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    lie = flip_one_byte(body)
    digest = "sha256:" + hashlib.sha256(lie).hexdigest()
    return lie, _set_header(headers, "Docker-Content-Digest", digest)


@pytest.fixture
def lying_proxy(plain_registry: RegistryServer) -> Iterator[Callable[[Mutation], LyingProxy]]:
    started: list[LyingProxy] = []

    def start(mutate: Mutation) -> LyingProxy:
        proxy = LyingProxy(plain_registry, mutate).__enter__()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.__exit__()


@pytest.mark.parametrize("mutate", [rewrite_digest_header, alter_body], ids=["header", "body"])
async def test_lying_registry_is_caught_and_nothing_is_returned(
    plain_registry: RegistryServer,
    lying_proxy: Callable[[Mutation], LyingProxy],
    make_client: MakeClient,
    repo: str,
    mutate: Mutation,
) -> None:
    modelkit.push_modelkit(plain_registry, repo, "v1")
    proxy = lying_proxy(mutate)
    policy = registry.HostPolicy(
        registries={proxy.host: registry.RegistryHostConfig(plain_http=True)}
    )
    resolver = Resolver(make_client(policy))
    ref = kit_ref(proxy.host, repo, "v1")

    with pytest.raises(errors.DigestMismatchError):
        await resolver.resolve(ref)

    assert resolver.cache_size() == 0
    assert plain_registry.count_manifest_requests(repo, "v1", status=200) == 1  # it did ask


async def test_consistent_lie_is_caught_when_the_reference_carries_the_digest(
    plain_registry: RegistryServer,
    lying_proxy: Callable[[Mutation], LyingProxy],
    make_client: MakeClient,
    repo: str,
) -> None:
    pushed = modelkit.push_modelkit(plain_registry, repo, "v1")
    proxy = lying_proxy(alter_body_and_header)
    policy = registry.HostPolicy(
        registries={proxy.host: registry.RegistryHostConfig(plain_http=True)}
    )
    resolver = Resolver(make_client(policy))
    pinned = refs.parse(f"{proxy.host}/{repo}:v1@{pushed}", grammar="kit")

    with pytest.raises(errors.DigestMismatchError):
        await resolver.resolve(pinned)

    assert plain_registry.count_manifest_requests(repo, pushed, status=200) == 1


# -- single flight ------------------------------------------------------------------------------


async def test_200_concurrent_resolutions_cost_the_registry_one_manifest_get(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    pushed = modelkit.push_modelkit(plain_registry, repo, "v1")
    metrics = Metrics()
    client = make_client(
        plain_http_policy(plain_registry), on_request=metrics.count_registry_request
    )
    resolver = Resolver(client, metrics=metrics)
    ref = kit_ref(plain_registry, repo, "v1")

    results = await asyncio.gather(*(resolver.resolve(ref) for _ in range(200)))

    assert {r.digest for r in results} == {pushed}
    assert plain_registry.count_manifest_requests(repo, "v1") == 1
    assert plain_registry.count_requests("GET", rf"/v2/{re.escape(repo)}/.*") == 1
    labels = {"registry": plain_registry.host, "kind": "manifest"}
    assert metrics.value("kitpin_registry_requests_total", labels) == 1
    labels = {"registry": plain_registry.host, "kind": "ping"}  # its /v2/ answered 200
    assert metrics.value("kitpin_registry_requests_total", labels) == 1
    assert metrics.value("kitpin_resolver_requests_total") == 200
    assert metrics.value("kitpin_resolver_cache_misses_total") == 1
    assert metrics.value("kitpin_resolver_coalesced_total") == 199


# -- the packer itself --------------------------------------------------------------------------


def test_packer_writes_kits_byte_layout() -> None:
    """Field order and escaping as Go's ``json.Marshal`` of kit's structs (checked once against
    Go itself: unmarshal + marshal into ``ocispec.Manifest`` / kit's ``KitFile`` gives back the
    same bytes)."""
    kitfile = modelkit.default_kitfile(with_code=False, with_dataset=False, with_docs=False)
    kitfile["package"]["description"] = "a <b> & c"
    kitops = modelkit.pack_modelkit(kitfile=kitfile)
    modelpack = modelkit.pack_modelkit(kitfile=kitfile, fmt="modelpack")

    assert kitops.manifest.startswith(
        b'{"schemaVersion":2,"config":{"mediaType":"application/vnd.kitops.modelkit.config.v1+json",'
        b'"digest":"sha256:'
    )
    assert kitops.manifest.endswith(b'],"annotations":{"ml.kitops.modelkit.cli-version":"1.7.0"}}')
    assert kitops.config.data.startswith(
        b'{"manifestVersion":"1.0.0","package":{"name":"demo-model","version":"1.0.0",'
        b'"description":"a \\u003cb\\u003e \\u0026 c",'
    )
    assert modelpack.manifest.startswith(
        b'{"schemaVersion":2,"artifactType":"application/vnd.cncf.model.manifest.v1+json",'
        b'"config":{"mediaType":"application/vnd.cncf.model.config.v1+json",'
    )
    assert b'"annotations":{"org.cncf.model.filepath":"model.bin"}' in modelpack.manifest
    assert modelpack.config.data.startswith(b'{"descriptor":{"createdAt":')
    assert b'"modelfs":{"type":"layers","diffIds":["sha256:' in modelpack.config.data
    # Deterministic per seed; another seed changes every layer and so the digest.
    assert modelkit.pack_modelkit(kitfile=kitfile).digest == kitops.digest
    assert modelkit.pack_modelkit(kitfile=kitfile, seed=1).digest != kitops.digest
