"""RegistryClient against a scripted registry (httpx.MockTransport): digests, size caps,
status mapping, transport errors, host policy, redirects, config blobs."""

from __future__ import annotations

import email.utils
import json
import ssl
from collections.abc import Callable

import httpx
import pytest
from registry_fakes import (
    OCI_MANIFEST,
    CountingStream,
    FakeClock,
    FakeDNS,
    kitfile_bytes,
    make_client,
    manifest_response,
    modelkit_manifest,
    ref,
    sha256,
)

from controller import errors
from controller.registry import Credential, RegistryClient, hosts
from controller.registry.requests import build_manifest_request

ACCEPTED = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


# -- success and digests ------------------------------------------------------------------------


async def test_anonymous_manifest_digest_computed_locally_and_format_classified() -> None:
    body = modelkit_manifest()
    client, seen = make_client(lambda request: manifest_response(body))
    async with client:
        manifest = await client.get_manifest(ref())
    assert manifest.digest == sha256(body)
    assert manifest.size == len(body)
    assert manifest.format == "kitops-modelkit"
    assert manifest.media_type == OCI_MANIFEST
    ping, request = seen.requests
    assert str(ping.url) == "https://reg.example/v2/"
    assert "authorization" not in ping.headers
    assert str(request.url) == "https://reg.example/v2/team/model/manifests/v1"
    assert "authorization" not in request.headers
    assert set(request.headers["accept"].split(", ")) == ACCEPTED


async def test_matching_docker_content_digest_is_accepted() -> None:
    body = modelkit_manifest()
    headers = {"Docker-Content-Digest": sha256(body)}
    client, _ = make_client(lambda request: manifest_response(body, headers=headers))
    manifest = await client.get_manifest(ref())
    assert manifest.digest == sha256(body)


async def test_docker_content_digest_mismatch_is_refused() -> None:
    body = modelkit_manifest()
    lie = "sha256:" + "0" * 64
    client, _ = make_client(
        lambda request: manifest_response(body, headers={"Docker-Content-Digest": lie})
    )
    with pytest.raises(errors.DigestMismatchError) as caught:
        await client.get_manifest(ref())
    assert lie in caught.value.message
    assert sha256(body) in caught.value.message
    assert "nothing was pinned" in caught.value.message
    assert (caught.value.registry, caught.value.repository) == ("reg.example", "team/model")


async def test_reference_digest_is_fetched_and_verified() -> None:
    body = modelkit_manifest()
    client, seen = make_client(lambda request: manifest_response(body))
    manifest = await client.get_manifest(ref(digest=sha256(body)))
    assert manifest.digest == sha256(body)
    assert [r.url.path for r in seen.requests] == [
        "/v2/",
        f"/v2/team/model/manifests/{sha256(body)}",
    ]


async def test_reference_digest_mismatch_is_refused() -> None:
    body = modelkit_manifest()
    wanted = "sha256:" + "1" * 64
    client, _ = make_client(lambda request: manifest_response(body))
    with pytest.raises(errors.DigestMismatchError) as caught:
        await client.get_manifest(ref(digest=wanted))
    assert wanted in caught.value.message and sha256(body) in caught.value.message


async def test_non_model_artifact_is_returned_classified_as_other() -> None:
    body = b'{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
    body += b'"digest":"sha256:' + b"c" * 64 + b'","size":2},"layers":[]}'
    client, _ = make_client(lambda request: manifest_response(body))
    manifest = await client.get_manifest(ref())
    assert manifest.format == "other"


# -- size caps and bad bodies -------------------------------------------------------------------


async def test_oversized_content_length_is_refused_before_reading() -> None:
    stream = CountingStream(chunks=100)
    client, _ = make_client(
        lambda request: httpx.Response(200, headers={"Content-Length": "9999999"}, stream=stream),
        max_manifest_bytes=1024,
    )
    with pytest.raises(errors.ManifestTooLargeError) as caught:
        await client.get_manifest(ref())
    assert stream.read == 0
    assert "9999999" in caught.value.message


async def test_oversized_streamed_body_stops_reading_at_the_cap() -> None:
    stream = CountingStream(chunks=1000, size=64 * 1024)
    client, _ = make_client(
        lambda request: httpx.Response(200, stream=stream), max_manifest_bytes=200 * 1024
    )
    with pytest.raises(errors.ManifestTooLargeError):
        await client.get_manifest(ref())
    assert stream.read <= 4


async def test_body_that_is_not_json_is_a_bad_response() -> None:
    client, _ = make_client(lambda request: manifest_response(b"<html>hello</html>"))
    with pytest.raises(errors.BadResponseError) as caught:
        await client.get_manifest(ref())
    assert type(caught.value) is errors.BadResponseError
    assert caught.value.registry == "reg.example"


async def test_json_that_is_not_a_manifest_is_a_bad_response() -> None:
    client, _ = make_client(lambda request: manifest_response(b'{"config": 3}'))
    with pytest.raises(errors.BadResponseError) as caught:
        await client.get_manifest(ref())
    assert caught.value.registry == "reg.example"
    assert caught.value.repository == "team/model"


async def test_json_array_is_a_bad_response() -> None:
    client, _ = make_client(lambda request: manifest_response(b"[1, 2]"))
    with pytest.raises(errors.BadResponseError):
        await client.get_manifest(ref())


# -- status mapping -----------------------------------------------------------------------------


def oci_error(code: str, message: str = "something") -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, b"", errors.NotFoundError),
        (404, oci_error("MANIFEST_UNKNOWN"), errors.NotFoundError),
        (400, oci_error("NAME_UNKNOWN"), errors.NotFoundError),
        (401, b"", errors.UnauthorizedError),
        (403, oci_error("DENIED", "no pull for you"), errors.ForbiddenError),
        (429, b"", errors.RateLimitedError),
        (500, b"", errors.RegistryError),
        (502, b"bad gateway", errors.RegistryError),
        (503, oci_error("UNAVAILABLE"), errors.RegistryError),
        (418, b"", errors.BadResponseError),
        (304, b"", errors.BadResponseError),
    ],
)
async def test_status_mapping(status: int, body: bytes, expected: type[Exception]) -> None:
    client, _ = make_client(lambda request: httpx.Response(status, content=body))
    with pytest.raises(errors.RegistryError) as caught:
        await client.get_manifest(ref())
    assert type(caught.value) is expected
    assert caught.value.registry == "reg.example"
    assert caught.value.repository == "team/model"
    assert "reg.example" in caught.value.message


async def test_registry_error_message_is_quoted_and_says_what_to_do() -> None:
    client, _ = make_client(
        lambda request: httpx.Response(403, content=oci_error("DENIED", "no pull\nfor you"))
    )
    with pytest.raises(errors.ForbiddenError) as caught:
        await client.get_manifest(ref())
    assert "no pull for you" in caught.value.message
    assert "grant that credential pull access" in caught.value.message


async def test_unauthorized_says_to_add_a_pull_secret() -> None:
    client, _ = make_client(lambda request: httpx.Response(401))
    with pytest.raises(errors.UnauthorizedError) as caught:
        await client.get_manifest(ref())
    assert "pull secret" in caught.value.message


async def test_retry_after_seconds() -> None:
    client, _ = make_client(lambda request: httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(errors.RateLimitedError) as caught:
        await client.get_manifest(ref())
    assert caught.value.retry_after == 7.0


async def test_retry_after_http_date(clock: FakeClock) -> None:
    when = email.utils.formatdate(clock.now + 90, usegmt=True)
    client, _ = make_client(
        lambda request: httpx.Response(429, headers={"Retry-After": when}), clock=clock
    )
    with pytest.raises(errors.RateLimitedError) as caught:
        await client.get_manifest(ref())
    assert caught.value.retry_after == pytest.approx(90, abs=1)


async def test_retry_after_missing_or_garbage_is_none() -> None:
    client, _ = make_client(lambda request: httpx.Response(429, headers={"Retry-After": "soon"}))
    with pytest.raises(errors.RateLimitedError) as caught:
        await client.get_manifest(ref())
    assert caught.value.retry_after is None


# -- transport errors ---------------------------------------------------------------------------


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


async def test_timeout_is_registry_timeout() -> None:
    client, _ = make_client(raising(httpx.ReadTimeout("slow")))
    with pytest.raises(errors.RegistryTimeoutError) as caught:
        await client.get_manifest(ref())
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


async def test_connection_refused_is_unreachable() -> None:
    client, _ = make_client(raising(httpx.ConnectError("refused")))
    with pytest.raises(errors.UnreachableError) as caught:
        await client.get_manifest(ref())
    assert caught.value.registry == "reg.example"


async def test_tls_verification_failure_says_configure_ca_file() -> None:
    error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.__cause__ = ssl.SSLCertVerificationError("self-signed certificate")
    client, _ = make_client(raising(error))
    with pytest.raises(errors.UnreachableError) as caught:
        await client.get_manifest(ref())
    assert "configure caFile for reg.example" in caught.value.message


async def test_dns_failure_is_unreachable() -> None:
    dns = FakeDNS(table={"reg.example": OSError(-2, "Name or service not known")})
    client, seen = make_client(lambda request: manifest_response(modelkit_manifest()), dns=dns)
    with pytest.raises(errors.UnreachableError) as caught:
        await client.get_manifest(ref())
    assert "cannot resolve reg.example" in caught.value.message
    assert seen.requests == []


# -- host policy ---------------------------------------------------------------------------------


async def test_https_by_default_and_plain_http_only_when_configured() -> None:
    body = modelkit_manifest()
    policy = hosts.HostPolicy(
        registries={"127.0.0.1:5000": hosts.RegistryHostConfig(plain_http=True)}
    )
    client, seen = make_client(lambda request: manifest_response(body), policy=policy)
    await client.get_manifest(ref(registry="127.0.0.1:5000"))
    await client.get_manifest(ref(registry="127.0.0.1:5001"))
    await client.get_manifest(ref(registry="reg.example"))
    assert [str(r.url).split("/v2/")[0] for r in seen.calls()] == [
        "http://127.0.0.1:5000",
        "https://127.0.0.1:5001",
        "https://reg.example",
    ]
    assert [str(r.url) for r in seen.pings()] == [  # one per endpoint, same scheme
        "http://127.0.0.1:5000/v2/",
        "https://127.0.0.1:5001/v2/",
        "https://reg.example/v2/",
    ]


async def test_docker_hub_is_served_by_registry_1() -> None:
    client, seen = make_client(lambda request: manifest_response(modelkit_manifest()))
    await client.get_manifest(ref(registry="docker.io", repository="library/model"))
    assert seen.hosts() == ["registry-1.docker.io", "registry-1.docker.io"]  # ping, manifest


async def test_registry_outside_allowlist_is_refused_without_a_request() -> None:
    policy = hosts.HostPolicy(allowed_registries=("*.example.com",))
    client, seen = make_client(lambda request: manifest_response(b"{}"), policy=policy)
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.get_manifest(ref(registry="reg.example"))
    assert "allowedRegistries" in caught.value.message
    assert seen.requests == []


async def test_metadata_address_as_registry_is_refused() -> None:
    client, seen = make_client(lambda request: manifest_response(b"{}"))
    with pytest.raises(errors.HostNotAllowedError):
        await client.get_manifest(ref(registry="169.254.169.254"))
    with pytest.raises(errors.HostNotAllowedError):
        await client.get_manifest(ref(registry="metadata.google.internal"))
    assert seen.requests == []


async def test_name_resolving_into_a_denied_network_is_refused(dns: FakeDNS) -> None:
    dns.table["sneaky.example"] = ["10.1.1.1", "169.254.169.254"]
    client, seen = make_client(lambda request: manifest_response(b"{}"), dns=dns)
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.get_manifest(ref(registry="sneaky.example"))
    assert "169.254.169.254" in caught.value.message
    assert caught.value.registry == "sneaky.example"
    assert seen.requests == []


async def test_dns_is_skipped_for_ip_literals_and_remembered_for_names(dns: FakeDNS) -> None:
    client, _ = make_client(lambda request: manifest_response(modelkit_manifest()), dns=dns)
    await client.get_manifest(ref(registry="10.0.0.9:5000"))
    await client.get_manifest(ref(registry="[fd12::1]:5000"))
    assert dns.lookups == []
    await client.get_manifest(ref(registry="reg.example"))
    await client.get_manifest(ref(registry="reg.example"))
    assert dns.lookups == ["reg.example"]


# -- redirects -----------------------------------------------------------------------------------


async def test_redirect_to_denied_host_is_refused_without_a_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "reg.example"
        return httpx.Response(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    client, seen = make_client(handler)
    with pytest.raises(errors.HostNotAllowedError):
        await client.get_manifest(ref())
    # The ping's redirect is not followed; the manifest's is refused.
    assert seen.paths() == ["GET reg.example/v2/", "GET reg.example/v2/team/model/manifests/v1"]


async def test_https_redirect_to_metadata_is_refused() -> None:
    client, seen = make_client(
        lambda request: httpx.Response(302, headers={"Location": "https://[fd00:ec2::254]/x"})
    )
    with pytest.raises(errors.HostNotAllowedError):
        await client.get_manifest(ref())
    assert seen.paths() == ["GET reg.example/v2/", "GET reg.example/v2/team/model/manifests/v1"]


async def test_plain_http_redirect_is_refused_unless_target_configured() -> None:
    body = modelkit_manifest()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return httpx.Response(302, headers={"Location": "http://mirror.example:8080/m"})
        return manifest_response(body)

    client, seen = make_client(handler)
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.get_manifest(ref())
    assert "plain HTTP" in caught.value.message
    assert seen.hosts() == ["reg.example", "reg.example"]  # ping (not followed), manifest

    policy = hosts.HostPolicy(
        registries={"mirror.example:8080": hosts.RegistryHostConfig(plain_http=True)}
    )
    client, seen = make_client(handler, policy=policy)
    manifest = await client.get_manifest(ref())
    assert manifest.digest == sha256(body)
    assert seen.hosts() == ["reg.example", "reg.example", "mirror.example"]


async def test_too_many_redirects() -> None:
    client, seen = make_client(
        lambda request: httpx.Response(302, headers={"Location": "/v2/team/model/manifests/v1"})
    )
    with pytest.raises(errors.BadResponseError) as caught:
        await client.get_manifest(ref())
    assert "redirects" in caught.value.message
    assert len(seen.pings()) == 1  # its redirect not followed
    assert len(seen.calls()) == 4


async def test_redirect_without_location_is_bad_response() -> None:
    client, _ = make_client(lambda request: httpx.Response(302))
    with pytest.raises(errors.BadResponseError):
        await client.get_manifest(ref())


# -- config blobs --------------------------------------------------------------------------------


async def test_config_blob_via_redirect_to_storage_drops_authorization() -> None:
    config = kitfile_bytes()
    body = modelkit_manifest(config)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.example":
            return httpx.Response(200, content=config)
        if "/blobs/" in request.url.path:
            return httpx.Response(307, headers={"Location": "https://storage.example/blob?sig=abc"})
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return manifest_response(body)

    credential = Credential(username="u", password="p", source="test")
    client, seen = make_client(handler)
    manifest = await client.get_manifest(ref(), credential=credential)
    kitfile = await client.get_config(ref(), manifest, credential=credential)
    assert kitfile["package"] == {"name": "demo"}
    blob, storage = seen.requests[-2:]
    assert blob.url.path == f"/v2/team/model/blobs/{sha256(config)}"
    assert blob.headers["authorization"].startswith("Basic ")
    assert storage.url.host == "storage.example"
    assert "authorization" not in storage.headers


async def test_config_blob_digest_mismatch() -> None:
    config = kitfile_bytes()
    body = modelkit_manifest(config)

    def handler(request: httpx.Request) -> httpx.Response:
        if "/blobs/" in request.url.path:
            return httpx.Response(200, content=config + b" ")
        return manifest_response(body)

    client, _ = make_client(handler)
    manifest = await client.get_manifest(ref())
    with pytest.raises(errors.DigestMismatchError):
        await client.get_config(ref(), manifest)


async def test_config_blob_declared_too_large_is_not_fetched() -> None:
    config = kitfile_bytes()
    client, seen = make_client(
        lambda request: manifest_response(modelkit_manifest(config)), max_config_bytes=8
    )
    manifest = await client.get_manifest(ref())
    with pytest.raises(errors.ManifestTooLargeError):
        await client.get_config(ref(), manifest)
    assert seen.paths() == ["GET reg.example/v2/", "GET reg.example/v2/team/model/manifests/v1"]


async def test_config_of_an_index_is_a_bad_response() -> None:
    index = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )
    client, _ = make_client(
        lambda request: httpx.Response(
            200, content=index, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}
        )
    )
    manifest = await client.get_manifest(ref())
    assert manifest.format == "oci-index"
    with pytest.raises(errors.BadResponseError):
        await client.get_config(ref(), manifest)


# -- plumbing ------------------------------------------------------------------------------------


async def test_one_async_client_per_tls_config_reused(tmp_path: object) -> None:
    import trustme

    ca = trustme.CA()
    ca_file = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    body = modelkit_manifest()
    contexts: list[ssl.SSLContext] = []

    def factory(context: ssl.SSLContext) -> httpx.AsyncClient:
        contexts.append(context)
        return httpx.AsyncClient(transport=httpx.MockTransport(lambda r: manifest_response(body)))

    policy = hosts.HostPolicy(
        registries={"private.example": hosts.RegistryHostConfig(ca_file=ca_file)}
    )
    client = RegistryClient(policy, client_factory=factory, resolve=FakeDNS())
    async with client:
        for _ in range(3):
            await client.get_manifest(ref(registry="reg.example"))
            await client.get_manifest(ref(registry="private.example"))
            await client.get_manifest(ref(registry="private.example:443"))
    assert len(contexts) == 2
    _system, private = contexts
    assert all(c.verify_mode == ssl.CERT_REQUIRED and c.check_hostname for c in contexts)
    assert len(private.get_ca_certs()) == 1


async def test_on_request_counts_every_request() -> None:
    counted: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "t"})
        if "authorization" not in request.headers:
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}
            )
        return manifest_response(modelkit_manifest())

    client, _ = make_client(handler, on_request=lambda r, k: counted.append((r, k)))
    await client.get_manifest(ref(registry="docker.io", repository="library/m"))
    assert counted == [("docker.io", "ping"), ("docker.io", "token"), ("docker.io", "manifest")]


def test_build_manifest_request_is_pure() -> None:
    policy = hosts.HostPolicy()
    request = build_manifest_request(policy, ref(digest="sha256:" + "a" * 64), authorization="X")
    assert request.method == "GET"
    assert str(request.url) == f"https://reg.example/v2/team/model/manifests/sha256:{'a' * 64}"
    assert request.headers["authorization"] == "X"
    assert request.headers["accept-encoding"] == "identity"


async def test_unloadable_ca_file_is_unreachable_naming_ca_file(tmp_path: object) -> None:
    policy = hosts.HostPolicy(
        registries={"reg.example": hosts.RegistryHostConfig(ca_file=f"{tmp_path}/missing.pem")}
    )

    def factory(context: ssl.SSLContext) -> httpx.AsyncClient:  # pragma: no cover
        raise AssertionError("no client without its CA")

    client = RegistryClient(policy, client_factory=factory, resolve=FakeDNS())
    with pytest.raises(errors.UnreachableError) as caught:
        await client.get_manifest(ref())
    assert "caFile for reg.example" in caught.value.message


async def test_content_type_parameters_are_dropped() -> None:
    body = modelkit_manifest()
    client, _ = make_client(
        lambda request: httpx.Response(
            200, content=body, headers={"Content-Type": f"{OCI_MANIFEST}; charset=utf-8"}
        )
    )
    manifest = await client.get_manifest(ref())
    assert manifest.media_type == OCI_MANIFEST


async def test_same_origin_redirect_keeps_authorization() -> None:
    body = modelkit_manifest()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/t"'}
            )
        if request.url.path.endswith("/v1"):
            return httpx.Response(301, headers={"Location": "/v2/team/model/manifests/v1-moved"})
        return manifest_response(body)

    client, seen = make_client(handler)
    await client.get_manifest(ref(), credential=Credential(registry_token="tok", source="t"))
    assert [(r.url.path, r.headers.get("authorization")) for r in seen.requests] == [
        ("/v2/", None),
        ("/v2/team/model/manifests/v1", "Bearer tok"),
        ("/v2/team/model/manifests/v1-moved", "Bearer tok"),
    ]
