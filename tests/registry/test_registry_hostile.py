"""A registry the user controls (scripted behind httpx.MockTransport): whatever it answers,
RegistryClient raises only RegistryError subclasses, each with its documented reason.

Deeply nested JSON (manifests, config blobs, 404 and 429 bodies, token answers), Retry-After
values that are neither seconds nor a date, a huge ``expires_in``, tokens that cannot go in a
header, bodies in a Content-Encoding kitpin did not ask for, malformed Content-Length, and
``xn--`` host names no IDNA decoder accepts (in the reference, a redirect, a token realm).
A property-based pass throws arbitrary answers at the whole request cycle.
"""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_fakes import (
    OCI_MANIFEST,
    FakeClock,
    is_ping,
    kitfile_bytes,
    make_client,
    manifest_response,
    modelkit_manifest,
    ref,
    sha256,
)

from controller import errors, jsonlimits
from controller.registry import Credential, auth, responses

DEEP = b"[" * 5000 + b"]" * 5000
"""Far past Python's recursion limit: ``json.loads`` raised ``RecursionError`` on it."""
DEEP_OBJECT = b'{"a":' * 65 + b"1" + b"}" * 65
"""Valid JSON, one level past :data:`controller.jsonlimits.MAX_DEPTH`."""
DEEP_ERRORS = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "detail": ' + DEEP + b"}]}"


def answer(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    """A response with ``headers`` as a registry may send them: any text, UTF-8 on the wire."""
    return httpx.Response(status, content=body, headers=wire(headers))


def wire(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers.items()]


# -- deeply nested JSON -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["5000-deep", "65-deep"])
async def test_a_deeply_nested_manifest_is_a_bad_response(body: bytes) -> None:
    client, _ = make_client(lambda request: manifest_response(body))
    async with client:
        with pytest.raises(errors.BadResponseError) as caught:
            await client.get_manifest(ref())
    assert type(caught.value) is errors.BadResponseError
    assert "nested deeper than 64 levels" in caught.value.message
    assert caught.value.registry == "reg.example"


async def test_a_deeply_nested_config_blob_is_a_bad_response() -> None:
    manifest = modelkit_manifest(DEEP)

    def handler(request: httpx.Request) -> httpx.Response:
        if "/blobs/" in request.url.path:
            return answer(200, DEEP)
        return manifest_response(manifest)

    client, _ = make_client(handler)
    async with client:
        found = await client.get_manifest(ref())
        with pytest.raises(errors.BadResponseError) as caught:
            await client.get_config(ref(), found)
    assert "config blob" in caught.value.message
    assert "nested deeper than 64 levels" in caught.value.message


@pytest.mark.parametrize("body", [DEEP, DEEP_ERRORS], ids=["bare", "in-errors"])
async def test_a_404_with_a_deeply_nested_body_is_not_found(body: bytes) -> None:
    client, _ = make_client(lambda request: answer(404, body))
    async with client:
        with pytest.raises(errors.NotFoundError):
            await client.get_manifest(ref())


@pytest.mark.parametrize(
    "retry_after",
    [
        "\u00b2",  # isdigit(), but float() refuses it
        "1e400",
        "9" * 5000,
        "Mon, 01 Jan 2024 99999999999999999999:00:00 GMT",
        "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
        "Mon, 99999999999999999999 Jan 2024 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "soon",
    ],
)
async def test_a_429_with_a_nested_body_and_any_retry_after_is_rate_limited(
    retry_after: str,
) -> None:
    client, _ = make_client(lambda request: answer(429, DEEP, **{"Retry-After": retry_after}))
    async with client:
        with pytest.raises(errors.RateLimitedError) as caught:
            await client.get_manifest(ref())
    waited = caught.value.retry_after
    assert waited is None or 0 <= waited <= responses.MAX_RETRY_AFTER_SECONDS


def test_retry_after_is_capped_and_only_ascii_digits_are_seconds() -> None:
    assert responses.parse_retry_after("\u00b2", now=0.0) is None  # isdigit() but no int
    assert responses.parse_retry_after("\u0661\u0662", now=0.0) is None  # Arabic-Indic 12
    assert responses.parse_retry_after("120", now=0.0) == 120.0
    assert responses.parse_retry_after("9" * 30, now=0.0) == responses.MAX_RETRY_AFTER_SECONDS
    assert responses.parse_retry_after("0" * 30 + "5", now=0.0) == 5.0


# -- token answers ------------------------------------------------------------------------------


def bearer_registry(token_answer: httpx.Response) -> tuple[list[httpx.Request], object]:
    """A registry at reg.example whose token service auth.example answers ``token_answer``;
    it serves the manifest to ``Bearer good``."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.host == "auth.example":
            return token_answer
        if request.headers.get("authorization") == "Bearer good":
            return manifest_response(modelkit_manifest())
        challenge = 'Bearer realm="https://auth.example/token",service="reg.example"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return sent, handler


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"token": ' + DEEP + b"}",
        b'{"token": "a\\r\\nX-Injected: 1"}',
        b'{"token": "t\\u00f6ken"}',
        b'{"token": "two words"}',
        b'{"token": "good", "expires_in": 1e400}',
        b'{"token": "good", "expires_in": ' + b"9" * 400 + b"}",
    ],
    ids=["deep", "deep-token", "crlf", "non-ascii", "space", "infinite", "400-digits"],
)
async def test_a_hostile_token_answer_is_a_bad_response(body: bytes) -> None:
    sent, handler = bearer_registry(answer(200, body))
    client, _ = make_client(handler)  # type: ignore[arg-type]
    async with client:
        with pytest.raises(errors.BadResponseError) as caught:
            await client.get_manifest(ref())
    assert "token" in caught.value.message
    assert caught.value.registry == "reg.example"
    assert not any(r.headers.get("authorization", "").startswith("Bearer") for r in sent)


async def test_a_huge_expires_in_is_clamped(clock: FakeClock) -> None:
    body = b'{"token": "good", "expires_in": 1' + b"0" * 300 + b"}"
    _, handler = bearer_registry(answer(200, body))
    client, _ = make_client(handler, clock=clock)  # type: ignore[arg-type]
    key = auth.TokenKey(
        realm="https://auth.example/token",
        service="reg.example",
        scope="repository:team/model:pull",
        identity="anonymous",
    )
    async with client:
        await client.get_manifest(ref())
        assert client.tokens.get(key) == "good"
        clock.advance(auth.MAX_TOKEN_LIFETIME)
        assert client.tokens.get(key) is None


@pytest.mark.parametrize("expires_in", [b"1e300", b"9" * 30, b"1" + b"0" * 300])
def test_a_huge_expires_in_is_clamped_not_an_overflow(expires_in: bytes) -> None:
    body = b'{"token": "t", "expires_in": ' + expires_in + b"}"
    token, expires = auth.parse_token_response(body, now=1000.0)
    assert token == "t"
    assert 1000.0 < expires <= 1000.0 + auth.MAX_TOKEN_LIFETIME


def test_an_expires_in_beyond_a_double_is_no_json_kitpin_accepts() -> None:
    """400 digits: ``float()`` of it raised OverflowError; the decoder refuses it."""
    body = b'{"token": "t", "expires_in": ' + b"9" * 400 + b"}"
    with pytest.raises(errors.BadResponseError):
        auth.parse_token_response(body, now=1000.0)


async def test_a_registry_token_from_a_credential_that_cannot_be_a_header_is_refused() -> None:
    """A Credential built by hand (the keychain already refuses such a secret)."""
    credential = Credential(registry_token="bad\r\ntoken", source="secret team-a/regcred")
    _, handler = bearer_registry(answer(200, b'{"token": "good"}'))
    client, _ = make_client(handler)  # type: ignore[arg-type]
    async with client:
        with pytest.raises(errors.RegistryError):
            await client.get_manifest(ref(), credential=credential)


# -- bodies: encodings and lengths --------------------------------------------------------------


async def test_an_encoded_manifest_is_refused_naming_the_header() -> None:
    body = modelkit_manifest()
    encoded = gzip.compress(body)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            stream=httpx.ByteStream(encoded),
            headers={"Content-Type": OCI_MANIFEST, "Content-Encoding": "GZIP"},
        )

    client, seen = make_client(handler)
    async with client:
        with pytest.raises(errors.BadResponseError) as caught:
            await client.get_manifest(ref())
    assert "Content-Encoding: gzip" in caught.value.message
    assert "Accept-Encoding: identity" in caught.value.message
    assert all(r.headers["accept-encoding"] == "identity" for r in seen.requests)


async def test_identity_content_encoding_is_the_body_as_is() -> None:
    body = modelkit_manifest()
    client, _ = make_client(
        lambda request: manifest_response(body, headers={"Content-Encoding": "identity"})
    )
    async with client:
        manifest = await client.get_manifest(ref())
    assert manifest.digest == sha256(body)


async def test_an_encoded_error_body_is_ignored_and_the_status_decides() -> None:
    client, _ = make_client(
        lambda request: httpx.Response(
            404, stream=httpx.ByteStream(b"\x1f\x8b junk"), headers={"Content-Encoding": "br"}
        )
    )
    async with client:
        with pytest.raises(errors.NotFoundError):
            await client.get_manifest(ref())


async def test_token_requests_ask_for_the_body_as_is() -> None:
    sent, handler = bearer_registry(answer(200, b'{"token": "good"}'))
    client, _ = make_client(handler)  # type: ignore[arg-type]
    async with client:
        await client.get_manifest(ref())
    (token_request,) = [r for r in sent if r.url.host == "auth.example"]
    assert token_request.headers.get("accept-encoding") == "identity"


@pytest.mark.parametrize("length", ["\u00b2", "9" * 5000, "-1", "12, 12"])
async def test_a_malformed_content_length_is_not_a_crash(length: str) -> None:
    body = modelkit_manifest()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            stream=httpx.ByteStream(body),
            headers=wire({"Content-Type": OCI_MANIFEST, "Content-Length": length}),
        )

    client, _ = make_client(handler)
    async with client:
        try:
            await client.get_manifest(ref())
        except errors.RegistryError:
            pass  # too large, or whatever the registry's answer amounts to: a RegistryError


# -- host names no IDNA decoder accepts ---------------------------------------------------------


async def test_a_reference_to_an_invalid_idna_host_is_refused_unsent() -> None:
    client, seen = make_client(lambda request: manifest_response(modelkit_manifest()))
    async with client:
        with pytest.raises(errors.HostNotAllowedError) as caught:
            await client.get_manifest(ref(registry="xn--4.example"))
    assert "not a valid host name" in caught.value.message
    assert caught.value.registry == "xn--4.example"
    assert seen.requests == []


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://xn--4.example/blob", errors.BadResponseError),  # httpx reads it first
        ("http://", errors.HostNotAllowedError),
        ("http://\\/x", errors.HostNotAllowedError),
        ("https://", errors.BadResponseError),  # the same URL again: a redirect loop
    ],
)
async def test_a_redirect_to_an_invalid_host_is_refused(
    location: str, expected: type[errors.RegistryError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if is_ping(request):
            return httpx.Response(200, json={})
        return httpx.Response(307, headers={"Location": location})

    client, seen = make_client(handler)
    async with client:
        with pytest.raises(errors.RegistryError) as caught:
            await client.get_manifest(ref())
    assert type(caught.value) is expected, caught.value
    assert {r.url.raw_host for r in seen.requests} == {b"reg.example"}


async def test_a_token_realm_on_an_invalid_host_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        challenge = 'Bearer realm="https://xn--4.example/token",service="reg.example"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    client, seen = make_client(handler)
    async with client:
        with pytest.raises(errors.HostNotAllowedError):
            await client.get_manifest(ref())
    assert {r.url.raw_host for r in seen.requests} == {b"reg.example"}


# -- anything at all ----------------------------------------------------------------------------

_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
_JSONISH = st.sampled_from(
    [
        b"",
        b"{}",
        b"[]",
        b"null",
        DEEP,
        DEEP_OBJECT,
        DEEP_ERRORS,
        b'{"errors": [{"code": "NAME_UNKNOWN"}, 5, {"code": 7, "message": []}]}',
        b'{"errors": {"code": "x"}}',
        b'{"token": 5, "access_token": ["x"], "expires_in": true}',
        b'{"token": "good", "expires_in": -5, "issued_at": "0001-01-01T00:00:00+23:59"}',
        b'{"schemaVersion": 2, "layers": {}, "config": []}',
        b'{"schemaVersion": 2, "manifests": [{"digest": 5}]}',
        b'{"schemaVersion": 99999999999999999999999, "mediaType": ' + b'"x' * 100 + b'"}',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
        b'{"a": NaN}',
        b"1" * 5000,
    ]
)
_BODIES = st.one_of(_JSONISH, st.binary(max_size=200), st.just(modelkit_manifest()))
_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Retry-After",
            "Content-Encoding",
            "Content-Type",
            "Docker-Content-Digest",
            "Location",
            "WWW-Authenticate",
        ]
    ),
    st.one_of(
        _HEADER_TEXT,
        st.sampled_from(
            [
                "gzip, gzip",
                "identity",
                "https://xn--4.example/x",
                "http://169.254.169.254/",
                "https://[64:ff9b::a9fe:a9fe]/",
                "//",
                'Bearer realm="https://xn--a.example/t"',
                'Bearer realm="https://auth.example/token",service="x"',
                "Basic realm=x",
                "Negotiate",
                "sha256:" + "0" * 64,
                "sha512:zz",
                OCI_MANIFEST,
                "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
            ]
        ),
    ),
    max_size=4,
)
_ANSWERS = st.tuples(
    st.sampled_from([200, 201, 204, 301, 302, 307, 308, 400, 401, 403, 404, 405, 429, 500, 503]),
    _HEADERS,
    _BODIES,
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same cases every run: the unit suite is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(answers=st.lists(_ANSWERS, min_size=1, max_size=6))
def test_whatever_a_registry_answers_only_registry_errors_escape(
    answers: list[tuple[int, dict[str, str], bytes]],
) -> None:
    """Each request (``/v2/``, manifest, token, blob, redirect targets) gets the next scripted
    answer, the last one repeated."""
    script = iter(answers)
    last = answers[-1]

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers, body = next(script, last)
        return httpx.Response(status, stream=httpx.ByteStream(body), headers=wire(headers))

    async def run() -> None:
        client, _ = make_client(handler)
        async with client:
            credential = Credential(username="u", password="p", source="secret ns/s")
            for who in (None, credential):
                try:
                    manifest = await client.get_manifest(ref(), credential=who)
                    await client.get_config(ref(), manifest, credential=who)
                except errors.RegistryError:
                    pass

    asyncio.run(run())


def test_jsonlimits_is_the_one_decoder() -> None:
    """The same bytes are refused alike wherever a registry sends them."""
    with pytest.raises(jsonlimits.DecodeError):
        jsonlimits.loads(DEEP)
    assert json.loads(kitfile_bytes()) == jsonlimits.loads(kitfile_bytes())
