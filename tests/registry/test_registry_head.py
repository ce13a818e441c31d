"""RegistryClient.head_digest against a scripted registry (httpx.MockTransport): the digest of
a HEAD, by tag and by digest, the status mapping, auth, the header's checks, redirects through
the host policy, and the request kind it is counted as."""

from __future__ import annotations

import httpx
import pytest
from registry_fakes import (
    OCI_MANIFEST,
    api_root_ok,
    make_client,
    modelkit_manifest,
    ref,
    sha256,
)

from controller import errors
from controller.metrics import Metrics
from controller.registry import Credential, hosts
from controller.registry.requests import build_manifest_request

BODY = modelkit_manifest()
DIGEST = sha256(BODY)
ACCEPTED = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


def head_answer(digest: str | None = DIGEST, **headers: str) -> httpx.Response:
    """What a registry answers to a manifest HEAD: the headers a GET would carry, no body."""
    answer = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(BODY)), **headers}
    if digest is not None:
        answer["Docker-Content-Digest"] = digest
    return httpx.Response(200, headers=answer)


def only_heads(request: httpx.Request) -> httpx.Response:
    """A registry that fails the test on anything but a HEAD of a manifest."""
    assert request.method == "HEAD", request
    return head_answer()


# -- the digest -----------------------------------------------------------------------------------


async def test_head_of_a_tag_returns_docker_content_digest_reading_no_body() -> None:
    counted: list[tuple[str, str]] = []
    client, seen = make_client(only_heads, on_request=lambda r, k: counted.append((r, k)))
    async with client:
        assert await client.head_digest(ref()) == DIGEST
    ping, head = seen.requests
    assert (ping.method, str(ping.url)) == ("GET", "https://reg.example/v2/")
    assert (head.method, str(head.url)) == (
        "HEAD",
        "https://reg.example/v2/team/model/manifests/v1",
    )
    assert set(head.headers["accept"].split(", ")) == ACCEPTED
    assert head.headers["accept-encoding"] == "identity"
    assert "authorization" not in head.headers
    assert counted == [("reg.example", "ping"), ("reg.example", "head")]


async def test_head_by_digest_asks_for_the_digest() -> None:
    client, seen = make_client(only_heads)
    assert await client.head_digest(ref(digest=DIGEST)) == DIGEST
    assert seen.paths()[-1] == f"HEAD reg.example/v2/team/model/manifests/{DIGEST}"


async def test_head_by_digest_answered_with_another_digest_is_a_mismatch() -> None:
    other = "sha256:" + "e" * 64
    client, _ = make_client(lambda request: head_answer(other))
    with pytest.raises(errors.DigestMismatchError) as caught:
        await client.head_digest(ref(digest=DIGEST))
    assert DIGEST in caught.value.message and other in caught.value.message


async def test_content_length_larger_than_any_cap_is_not_a_body_to_read() -> None:
    # A HEAD answer's Content-Length (and Content-Encoding) describe what a GET would send.
    client, _ = make_client(
        lambda request: head_answer(**{"Content-Length": "999999999", "Content-Encoding": "gzip"}),
        max_manifest_bytes=1024,
    )
    assert await client.head_digest(ref()) == DIGEST


async def test_reference_digest_that_is_not_a_digest_is_refused_without_a_request() -> None:
    client, seen = make_client(only_heads)
    with pytest.raises(errors.BadResponseError):
        await client.head_digest(ref(digest="sha256:nothex"))
    assert seen.requests == []


# -- the header's checks --------------------------------------------------------------------------


async def test_missing_docker_content_digest_is_a_bad_response_saying_what_to_do() -> None:
    client, _ = make_client(lambda request: head_answer(None))
    with pytest.raises(errors.BadResponseError) as caught:
        await client.head_digest(ref())
    message = caught.value.message
    assert message.startswith("manifest reg.example/team/model:v1: ")
    assert "did not return a digest for HEAD" in message
    assert "Configure the registry" in message and "Docker-Content-Digest" in message
    assert (caught.value.registry, caught.value.repository) == ("reg.example", "team/model")


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "A" * 64,  # upper case
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 128,
        "md5:0123",
        "",
        "sha256:" + "a" * 64 + "\x00",
        "x" * 5000,
    ],
)
async def test_malformed_docker_content_digest_is_a_bad_response(value: str) -> None:
    client, _ = make_client(lambda request: head_answer(value))
    with pytest.raises(errors.BadResponseError) as caught:
        await client.head_digest(ref())
    assert "did not return a digest for HEAD" in caught.value.message
    assert len(caught.value.message) < 600  # a hostile header is quoted, cut short


async def test_two_docker_content_digest_headers_are_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers=[
                ("Docker-Content-Digest", DIGEST),
                ("Docker-Content-Digest", "sha256:" + "f" * 64),
            ],
        )

    client, _ = make_client(handler)
    with pytest.raises(errors.BadResponseError) as caught:
        await client.head_digest(ref())
    assert "did not return a digest for HEAD" in caught.value.message


async def test_surrounding_whitespace_is_not_part_of_the_digest() -> None:
    client, _ = make_client(lambda request: head_answer(f" {DIGEST} "))
    assert await client.head_digest(ref()) == DIGEST


# -- statuses -------------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", [None, DIGEST])
async def test_404_is_not_found_by_tag_and_by_digest(digest: str | None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(404)  # a HEAD's answer has no OCI error body
        return api_root_ok()

    client, seen = make_client(handler)
    with pytest.raises(errors.NotFoundError) as caught:
        await client.head_digest(ref(digest=digest), credential=None)
    assert "not found (404)" in caught.value.message
    assert (caught.value.registry, caught.value.repository) == ("reg.example", "team/model")
    assert seen.calls()[-1].url.path.endswith(f"/manifests/{digest or 'v1'}")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, errors.UnauthorizedError),
        (403, errors.ForbiddenError),
        (429, errors.RateLimitedError),
        (500, errors.RegistryError),
        (503, errors.RegistryError),
        (418, errors.BadResponseError),
    ],
)
async def test_status_mapping_is_get_manifests(
    status: int, expected: type[errors.RegistryError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(status, headers={"Retry-After": "7"})
        return api_root_ok()

    client, _ = make_client(handler)
    with pytest.raises(expected) as caught:
        await client.head_digest(ref())
    got = caught.value
    assert type(got) is expected
    if isinstance(got, errors.RateLimitedError):
        assert got.retry_after == 7.0

    # The same registry answering GET alike: the same error class.
    def get_handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return api_root_ok()
        return httpx.Response(status, headers={"Retry-After": "7"})

    client, _ = make_client(get_handler)
    with pytest.raises(expected) as caught_get:
        await client.get_manifest(ref())
    assert type(caught_get.value) is expected


async def test_transport_failure_is_a_registry_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = make_client(handler)
    with pytest.raises(errors.UnreachableError):
        await client.head_digest(ref())


async def test_timeout_is_registry_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            raise httpx.ReadTimeout("slow", request=request)
        return api_root_ok()

    client, _ = make_client(handler)
    with pytest.raises(errors.RegistryTimeoutError):
        await client.head_digest(ref())


# -- auth -----------------------------------------------------------------------------------------


async def test_401_then_token_then_retry_with_bearer() -> None:
    issued: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            issued.append(request)
            return httpx.Response(200, json={"token": "tok1", "expires_in": 300})
        assert request.method == "HEAD"
        if request.headers.get("authorization") == "Bearer tok1":
            return head_answer()
        challenge = (
            'Bearer realm="https://auth.example/token",service="reg.example",'
            'scope="repository:team/model:pull"'
        )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    alice = Credential(username="alice", password="pw", source="secret team-a/regcred")
    counted: list[str] = []
    # /v2/ is open: the challenge is learnt from the HEAD's 401, not up front.
    client, seen = make_client(
        handler, v2=lambda request: api_root_ok(), on_request=lambda r, k: counted.append(k)
    )
    assert await client.head_digest(ref(), credential=alice) == DIGEST
    assert seen.paths() == [
        "GET reg.example/v2/",
        "HEAD reg.example/v2/team/model/manifests/v1",
        "GET auth.example/token",
        "HEAD reg.example/v2/team/model/manifests/v1",
    ]
    assert seen.requests[1].headers.get("authorization") is None
    assert seen.requests[3].headers["authorization"] == "Bearer tok1"
    (token_request,) = issued
    assert "scope=repository%3Ateam%2Fmodel%3Apull" in str(token_request.url)
    assert token_request.headers["authorization"].startswith("Basic ")
    assert counted == ["ping", "head", "token", "head"]

    # The token is cached: the next HEAD carries it up front, one request.
    assert await client.head_digest(ref(digest=DIGEST), credential=alice) == DIGEST
    assert len(issued) == 1
    assert seen.requests[-1].headers["authorization"] == "Bearer tok1"


async def test_token_refused_again_is_unauthorized() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "useless"})
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}
        )

    client, seen = make_client(handler)
    with pytest.raises(errors.UnauthorizedError) as caught:
        await client.head_digest(ref())
    assert "pull secret" in caught.value.message
    # The ping learnt the challenge: one token, one HEAD carrying it, not retried with it.
    assert [p for p in seen.paths() if p.startswith("HEAD")] == [
        "HEAD reg.example/v2/team/model/manifests/v1"
    ]


async def test_basic_challenge_sends_basic_up_front() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return head_answer()

    credential = Credential(username="u", password="p", source="test")
    client, seen = make_client(handler)
    assert await client.head_digest(ref(), credential=credential) == DIGEST
    assert [(r.method, r.headers.get("authorization", "")[:6]) for r in seen.requests] == [
        ("GET", ""),
        ("HEAD", "Basic "),
    ]


# -- host policy and redirects --------------------------------------------------------------------


async def test_registry_outside_allowlist_is_refused_without_a_request() -> None:
    policy = hosts.HostPolicy(allowed_registries=("other.example",))
    client, seen = make_client(only_heads, policy=policy)
    with pytest.raises(errors.HostNotAllowedError):
        await client.head_digest(ref())
    assert seen.requests == []


async def test_redirect_is_followed_as_a_head_through_the_host_policy() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD"
        if request.url.host == "reg.example":
            return httpx.Response(
                307, headers={"Location": "https://mirror.example/v2/team/model/manifests/v1"}
            )
        return head_answer()

    client, seen = make_client(handler, v2=lambda request: api_root_ok())
    credential = Credential(registry_token="tok", source="t")
    assert await client.head_digest(ref(), credential=credential) == DIGEST
    assert seen.paths() == [
        "GET reg.example/v2/",
        "HEAD reg.example/v2/team/model/manifests/v1",
        "HEAD mirror.example/v2/team/model/manifests/v1",
    ]
    assert "authorization" not in seen.requests[-1].headers  # another origin


async def test_redirect_to_a_denied_host_is_refused_without_a_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "reg.example"
        return httpx.Response(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    client, seen = make_client(handler, v2=lambda request: api_root_ok())
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.head_digest(ref())
    assert caught.value.message.startswith("manifest reg.example/team/model:v1: ")
    assert seen.paths() == ["GET reg.example/v2/", "HEAD reg.example/v2/team/model/manifests/v1"]


async def test_plain_http_redirect_only_to_a_host_configured_plain_http() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return httpx.Response(302, headers={"Location": "http://mirror.example:8080/m"})
        return head_answer()

    client, _ = make_client(handler, v2=lambda request: api_root_ok())
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.head_digest(ref())
    assert "plain HTTP" in caught.value.message

    policy = hosts.HostPolicy(
        registries={"mirror.example:8080": hosts.RegistryHostConfig(plain_http=True)}
    )
    client, seen = make_client(handler, policy=policy, v2=lambda request: api_root_ok())
    assert await client.head_digest(ref()) == DIGEST
    assert seen.paths()[-1] == "HEAD mirror.example/m"


async def test_too_many_redirects_is_a_bad_response() -> None:
    client, seen = make_client(
        lambda request: httpx.Response(302, headers={"Location": "/v2/team/model/manifests/v1"}),
        v2=lambda request: api_root_ok(),
    )
    with pytest.raises(errors.BadResponseError) as caught:
        await client.head_digest(ref())
    assert "redirects" in caught.value.message
    assert len(seen.calls()) == 4
    assert {r.method for r in seen.calls()} == {"HEAD"}


# -- pieces ---------------------------------------------------------------------------------------


def test_build_manifest_head_request_is_the_get_with_another_method() -> None:
    policy = hosts.HostPolicy()
    get = build_manifest_request(policy, ref(), authorization="X")
    head = build_manifest_request(policy, ref(), authorization="X", method="HEAD")
    assert (get.method, head.method) == ("GET", "HEAD")
    assert head.url == get.url
    assert dict(head.headers) == dict(get.headers)


async def test_heads_are_counted_as_kind_head_in_the_metrics() -> None:
    metrics = Metrics()
    client, _ = make_client(only_heads, on_request=metrics.count_registry_request)
    await client.head_digest(ref())
    await client.head_digest(ref(digest=DIGEST))
    sample = "kitpin_registry_requests_total"
    assert metrics.value(sample, {"registry": "reg.example", "kind": "head"}) == 2.0
    assert metrics.value(sample, {"registry": "reg.example", "kind": "manifest"}) == 0.0
    assert metrics.value(sample, {"registry": "reg.example", "kind": "ping"}) == 1.0
