"""RegistryClient.get_referrers and get_blob against a scripted registry
(httpx.MockTransport): the OCI 1.1 referrers API, its tag-schema fallback on a 404, an empty
index when neither exists, status mapping, bounded JSON and size caps, digest verification,
the host policy, auth, and the request kinds counted."""

from __future__ import annotations

import json

import httpx
import pytest
from registry_fakes import make_client, ref, sha256

from controller import errors
from controller.registry import Credential, hosts

SUBJECT = "sha256:" + "a" * 64
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "b" * 64,
                "size": 10,
                "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            }
        ],
    }
).encode()
REFERRERS = f"/v2/team/model/referrers/{SUBJECT}"
FALLBACK = "/v2/team/model/manifests/sha256-" + "a" * 64


def index(status: int = 200, body: bytes = INDEX, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"Content-Type": OCI_INDEX, **headers})


async def test_the_referrers_api_answers_the_index() -> None:
    counted: list[tuple[str, str]] = []
    client, seen = make_client(
        lambda r: index(), on_request=lambda reg, k: counted.append((reg, k))
    )
    async with client:
        answer = await client.get_referrers(ref(), SUBJECT)
    assert answer == json.loads(INDEX)
    request = seen.calls()[0]
    assert (request.method, request.url.path) == ("GET", REFERRERS)
    assert request.headers["accept"] == OCI_INDEX
    assert request.headers["accept-encoding"] == "identity"
    assert counted == [("reg.example", "ping"), ("reg.example", "manifest")]


async def test_a_404_falls_back_to_the_tag_schema_index() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == REFERRERS:
            return httpx.Response(404, text="404 page not found")
        assert request.url.path == FALLBACK
        return index(**{"Docker-Content-Digest": sha256(INDEX)})

    client, seen = make_client(handler)
    async with client:
        assert await client.get_referrers(ref(), SUBJECT) == json.loads(INDEX)
    assert [r.url.path for r in seen.calls()] == [REFERRERS, FALLBACK]
    assert "application/vnd.oci.image.index.v1+json" in seen.calls()[1].headers["accept"]


async def test_neither_is_an_empty_index() -> None:
    client, _ = make_client(
        lambda r: httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    )
    async with client:
        answer = await client.get_referrers(ref(), SUBJECT)
    assert answer["manifests"] == []


async def test_a_fallback_index_that_does_not_match_its_digest_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == REFERRERS:
            return httpx.Response(404)
        return index(**{"Docker-Content-Digest": "sha256:" + "c" * 64})

    client, _ = make_client(handler)
    async with client:
        with pytest.raises(errors.DigestMismatchError):
            await client.get_referrers(ref(), SUBJECT)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(500), errors.RegistryError),
        (httpx.Response(403), errors.ForbiddenError),
        (index(body=b"[" * 5000), errors.BadResponseError),
        (index(body=b"[]"), errors.BadResponseError),
        (index(body=b" " * (4 * 1024 * 1024 + 1)), errors.ManifestTooLargeError),
    ],
)
async def test_failures_are_registry_errors_naming_the_referrers(
    answer: httpx.Response, error: type[errors.RegistryError]
) -> None:
    client, _ = make_client(lambda r: answer)
    async with client:
        with pytest.raises(error) as caught:
            await client.get_referrers(ref(), SUBJECT)
    assert f"referrers of reg.example/team/model@{SUBJECT}" in caught.value.message
    assert caught.value.registry == "reg.example"


async def test_referrers_need_a_sha256_digest_and_an_allowed_host() -> None:
    client, seen = make_client(lambda r: index())
    async with client:
        with pytest.raises(errors.BadResponseError):
            await client.get_referrers(ref(), "sha256:nothex")
    assert seen.requests == []
    policy = hosts.HostPolicy(allowed_registries=("other.example",))
    client, seen = make_client(lambda r: index(), policy=policy)
    async with client:
        with pytest.raises(errors.HostNotAllowedError):
            await client.get_referrers(ref(), SUBJECT)
    assert seen.requests == []


async def test_referrers_are_asked_with_the_credential() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return index()

    client, seen = make_client(handler)
    async with client:
        await client.get_referrers(
            ref(), SUBJECT, credential=Credential(username="u", password="p")
        )
    assert seen.calls()[-1].headers["authorization"].startswith("Basic ")


# -- blobs ----------------------------------------------------------------------------------------

PAYLOAD = b'{"critical":{}}'


async def test_a_blob_is_read_and_verified() -> None:
    counted: list[str] = []
    client, seen = make_client(
        lambda r: httpx.Response(200, content=PAYLOAD),
        on_request=lambda reg, kind: counted.append(kind),
    )
    async with client:
        assert await client.get_blob(ref(), sha256(PAYLOAD), max_bytes=1024) == PAYLOAD
    assert seen.calls()[0].url.path == f"/v2/team/model/blobs/{sha256(PAYLOAD)}"
    assert counted == ["ping", "blob"]


async def test_a_blob_with_other_bytes_is_a_mismatch() -> None:
    client, _ = make_client(lambda r: httpx.Response(200, content=PAYLOAD + b" "))
    async with client:
        with pytest.raises(errors.DigestMismatchError) as caught:
            await client.get_blob(ref(), sha256(PAYLOAD), max_bytes=1024)
    assert f"blob reg.example/team/model@{sha256(PAYLOAD)}" in caught.value.message


async def test_a_blob_over_the_cap_is_not_read() -> None:
    client, _ = make_client(lambda r: httpx.Response(200, content=b"x" * 2048))
    async with client:
        with pytest.raises(errors.ManifestTooLargeError):
            await client.get_blob(ref(), sha256(b"x" * 2048), max_bytes=1024)


async def test_a_missing_blob_is_not_found_and_a_bad_digest_is_refused_unsent() -> None:
    client, seen = make_client(
        lambda r: httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
    )
    async with client:
        with pytest.raises(errors.NotFoundError):
            await client.get_blob(ref(), sha256(PAYLOAD), max_bytes=1024)
        sent = len(seen.requests)
        with pytest.raises(errors.BadResponseError):
            await client.get_blob(ref(), "md5:abc", max_bytes=1024)
    assert len(seen.requests) == sent
