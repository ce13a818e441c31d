"""Authentication: challenge parsing, token responses, the token cache, and the Basic /
Bearer / identity-token flows through RegistryClient against a scripted registry."""

from __future__ import annotations

import base64
import datetime
import json
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import pytest
from registry_fakes import (
    FakeClock,
    FakeDNS,
    make_client,
    manifest_response,
    modelkit_manifest,
    ref,
)

from controller import errors
from controller.registry import Credential, auth, hosts
from controller.registry.auth import (
    TokenCache,
    TokenKey,
    check_realm,
    parse_challenges,
    parse_token_response,
)

# -- parse_challenges --------------------------------------------------------------------------


def test_bearer_challenge_with_quoted_commas() -> None:
    (challenge,) = parse_challenges(
        [
            'Bearer realm="https://auth.example/token",service="reg.example",'
            'scope="repository:team/model:pull,push"'
        ]
    )
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {
        "realm": "https://auth.example/token",
        "service": "reg.example",
        "scope": "repository:team/model:pull,push",
    }


def test_several_challenges_in_one_value_and_across_values() -> None:
    found = parse_challenges(
        [
            'Basic realm="a, b", BEARER Realm="https://x/t" , service=unquoted',
            'Negotiate abc+/==, Digest realm="d", nonce="n\\"q"',
        ]
    )
    assert [c.scheme for c in found] == ["basic", "bearer", "negotiate", "digest"]
    assert found[0].params["realm"] == "a, b"
    assert found[1].params == {"realm": "https://x/t", "service": "unquoted"}
    assert found[2].params == {"": "abc+/=="}
    assert found[3].params["nonce"] == 'n"q'


def test_unquoted_realm_url_and_spaces_around_equals() -> None:
    (challenge,) = parse_challenges(["Bearer realm = https://auth.example/token , service=x"])
    assert challenge.realm == "https://auth.example/token"
    assert challenge.params["service"] == "x"


@pytest.mark.parametrize("junk", ["", ",,,", "=x", '"', 'Bearer realm="unterminated', "@@@"])
def test_junk_never_raises(junk: str) -> None:
    parse_challenges([junk])


def test_first_duplicate_parameter_wins() -> None:
    (challenge,) = parse_challenges(['Bearer realm="https://a/t", realm="https://evil/t"'])
    assert challenge.realm == "https://a/t"


# -- token responses and the cache ---------------------------------------------------------------


def test_token_or_access_token_default_lifetime_with_margin() -> None:
    token, expires = parse_token_response(b'{"access_token": "abc"}', now=1000.0)
    assert token == "abc"
    assert 1000.0 + 50 <= expires < 1000.0 + 60
    token, _ = parse_token_response(b'{"token": "t1", "access_token": "t2"}', now=0.0)
    assert token == "t1"


def test_expires_in_and_issued_at_in_the_past() -> None:
    now = 1_700_000_000.0
    issued = datetime.datetime.fromtimestamp(now - 100, tz=datetime.UTC).isoformat()
    body = json.dumps({"token": "t", "expires_in": 300, "issued_at": issued}).encode()
    _, expires = parse_token_response(body, now=now)
    assert now + 180 <= expires <= now + 200


def test_issued_at_in_the_future_is_clock_skew_and_ignored() -> None:
    now = 1_700_000_000.0
    issued = datetime.datetime.fromtimestamp(now + 3600, tz=datetime.UTC).isoformat()
    body = json.dumps({"token": "t", "expires_in": 300, "issued_at": issued}).encode()
    _, expires = parse_token_response(body, now=now)
    assert now + 280 <= expires <= now + 300


@pytest.mark.parametrize("body", [b"nope", b"[]", b"{}", b'{"token": 5}', b'{"token": ""}'])
def test_bad_token_responses(body: bytes) -> None:
    with pytest.raises(errors.BadResponseError):
        parse_token_response(body, now=0.0)


def test_token_cache_expiry_and_bound(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, max_entries=2)
    keys = [
        TokenKey(realm="r", service="s", scope=f"repository:{i}:pull", identity="x")
        for i in range(3)
    ]
    cache.put(keys[0], "a", clock.now + 10)
    cache.put(keys[1], "b", clock.now + 100)
    cache.put(keys[2], "c", clock.now + 100)  # full: the oldest goes
    assert cache.get(keys[0]) is None
    assert (cache.get(keys[1]), cache.get(keys[2])) == ("b", "c")
    clock.advance(100)
    assert cache.get(keys[1]) is None
    cache.put(keys[0], "expired already", clock.now - 1)
    assert cache.get(keys[0]) is None


# -- check_realm ---------------------------------------------------------------------------------


def test_realm_rules() -> None:
    policy = hosts.HostPolicy(
        registries={"127.0.0.1:5000": hosts.RegistryHostConfig(plain_http=True)}
    )
    https_registry = httpx.URL("https://reg.example/v2/x/manifests/y")
    plain_registry = httpx.URL("http://127.0.0.1:5000/v2/x/manifests/y")
    check_realm("https://auth.example/token", registry_url=https_registry, policy=policy)
    check_realm("http://127.0.0.1:5000/token", registry_url=plain_registry, policy=policy)
    for realm, registry_url in [
        ("http://auth.example/token", https_registry),  # plain HTTP elsewhere
        ("http://127.0.0.1:5001/token", plain_registry),  # another port
        ("http://reg.example/token", https_registry),  # the registry, but it is https
        ("https://169.254.169.254/token", https_registry),
        ("https://metadata.google.internal/token", https_registry),
        ("ftp://auth.example/token", https_registry),
        ("https://user:pw@auth.example/token", https_registry),
    ]:
        with pytest.raises(errors.HostNotAllowedError):
            check_realm(realm, registry_url=registry_url, policy=policy)


# -- flows through the client --------------------------------------------------------------------


@dataclass
class AuthRegistry:
    """A registry at reg.example that wants a bearer token from auth.example (or Basic)."""

    scheme: str = "bearer"
    realm: str = "https://auth.example/token"
    expires_in: int | None = 300
    token_status: int = 200
    issued: list[str] = field(default_factory=list)
    token_requests: list[httpx.Request] = field(default_factory=list)
    body: bytes = field(default_factory=modelkit_manifest)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"details": "no"})
            token = f"tok{len(self.issued) + 1}"
            self.issued.append(token)
            answer: dict[str, object] = {"access_token": token}
            if self.expires_in is not None:
                answer["expires_in"] = self.expires_in
            return httpx.Response(200, json=answer)
        assert request.url.host == "reg.example"
        given = request.headers.get("authorization", "")
        if self.scheme == "basic" and given == basic("alice", "s3:cr:et"):
            return manifest_response(self.body)
        if self.scheme == "bearer" and given in {f"Bearer {t}" for t in self.issued[-1:]}:
            return manifest_response(self.body)
        if self.scheme == "bearer" and given == "Bearer static-registry-token":
            return manifest_response(self.body)
        if self.scheme == "basic":
            challenge = 'Basic realm="reg"'
        elif request.url.path == "/v2/":  # like distribution: /v2/ names no scope
            challenge = f'Bearer realm="{self.realm}",service="reg.example"'
        else:
            challenge = (
                f'Bearer realm="{self.realm}",service="reg.example",'
                'scope="repository:team/model:pull"'
            )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALICE = Credential(username="alice", password="s3:cr:et", source="secret team-a/regcred")


async def test_basic_challenge_then_preemptive_basic() -> None:
    registry = AuthRegistry(scheme="basic")
    client, seen = make_client(registry)
    await client.get_manifest(ref(), credential=ALICE)
    # The ping learns the challenge: the one manifest request carries Basic from the start.
    assert [(r.url.path, r.headers.get("authorization")) for r in seen.requests] == [
        ("/v2/", None),
        ("/v2/team/model/manifests/v1", basic("alice", "s3:cr:et")),
    ]
    await client.get_manifest(ref(), credential=ALICE)
    assert len(seen.requests) == 3  # the known challenge is answered up front, no new ping
    assert seen.requests[-1].headers["authorization"] == basic("alice", "s3:cr:et")


async def test_basic_challenge_without_credential_is_unauthorized() -> None:
    client, seen = make_client(AuthRegistry(scheme="basic"))
    with pytest.raises(errors.UnauthorizedError) as caught:
        await client.get_manifest(ref())
    assert "pull secret" in caught.value.message
    assert seen.paths() == ["GET reg.example/v2/", "GET reg.example/v2/team/model/manifests/v1"]


async def test_wrong_basic_password_is_unauthorized_naming_the_source() -> None:
    wrong = Credential(username="alice", password="hunter2", source="secret team-a/old")
    client, seen = make_client(AuthRegistry(scheme="basic"))
    with pytest.raises(errors.UnauthorizedError) as caught:
        await client.get_manifest(ref(), credential=wrong)
    assert "secret team-a/old" in caught.value.message
    assert "hunter2" not in caught.value.message
    # One manifest request, with the (wrong) Basic from the start; not sent twice.
    assert [(r.url.path, r.headers.get("authorization")) for r in seen.requests] == [
        ("/v2/", None),
        ("/v2/team/model/manifests/v1", basic("alice", "hunter2")),
    ]


async def test_bearer_flow_and_token_cache(clock: FakeClock) -> None:
    registry = AuthRegistry(expires_in=300)
    client, seen = make_client(registry, clock=clock)
    await client.get_manifest(ref(), credential=ALICE)
    # The ping learns the challenge; the token comes first, then one manifest request.
    assert seen.paths() == [
        "GET reg.example/v2/",
        "GET auth.example/token",
        "GET reg.example/v2/team/model/manifests/v1",
    ]
    (token_request,) = registry.token_requests
    assert parse_qs(token_request.url.query.decode()) == {
        "scope": ["repository:team/model:pull"],
        "service": ["reg.example"],
        "account": ["alice"],
    }
    assert token_request.headers["authorization"] == basic("alice", "s3:cr:et")
    assert seen.requests[-1].headers["authorization"] == "Bearer tok1"
    assert "authorization" not in seen.requests[0].headers

    # Cached: the second call is one request, no token request, no ping.
    await client.get_manifest(ref(), credential=ALICE)
    assert len(seen.requests) == 4
    assert len(registry.token_requests) == 1

    # Expired (minus margin): a new token is fetched up front, still no anonymous 401.
    clock.advance(295)
    await client.get_manifest(ref(), credential=ALICE)
    assert seen.paths()[4:] == [
        "GET auth.example/token",
        "GET reg.example/v2/team/model/manifests/v1",
    ]
    assert seen.requests[-1].headers["authorization"] == "Bearer tok2"


async def test_token_cache_is_per_credential_identity() -> None:
    registry = AuthRegistry()
    client, _ = make_client(registry)
    await client.get_manifest(ref(), credential=ALICE)
    await client.get_manifest(ref())  # anonymous: must not reuse alice's token
    assert len(registry.token_requests) == 2
    assert "authorization" not in registry.token_requests[1].headers


async def test_default_expiry_is_sixty_seconds(clock: FakeClock) -> None:
    registry = AuthRegistry(expires_in=None)
    client, _ = make_client(registry, clock=clock)
    await client.get_manifest(ref())
    clock.advance(30)
    await client.get_manifest(ref())
    assert len(registry.token_requests) == 1
    clock.advance(30)
    await client.get_manifest(ref())
    assert len(registry.token_requests) == 2


async def test_revoked_cached_token_is_replaced_once() -> None:
    registry = AuthRegistry()
    client, seen = make_client(registry)
    await client.get_manifest(ref())
    registry.issued.append("rotated-elsewhere")  # the registry no longer accepts tok1
    await client.get_manifest(ref())
    assert [p.split(" ")[1].split("/")[0] for p in seen.paths()[3:]] == [
        "reg.example",  # cached tok1: 401
        "auth.example",  # fresh token
        "reg.example",  # accepted
    ]


async def test_identity_token_uses_refresh_token_post() -> None:
    registry = AuthRegistry()
    credential = Credential(username="<token>", identity_token="refresh-me", source="cfg")
    client, _ = make_client(registry)
    await client.get_manifest(ref(), credential=credential)
    (token_request,) = registry.token_requests
    assert token_request.method == "POST"
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-me"],
        "service": ["reg.example"],
        "scope": ["repository:team/model:pull"],
        "client_id": ["kitpin"],
    }
    assert "authorization" not in token_request.headers


async def test_registry_token_is_sent_as_the_bearer_token() -> None:
    registry = AuthRegistry()
    credential = Credential(registry_token="static-registry-token", source="cfg")
    client, seen = make_client(registry)
    await client.get_manifest(ref(), credential=credential)
    assert registry.token_requests == []
    assert seen.requests[-1].headers["authorization"] == "Bearer static-registry-token"


@pytest.mark.parametrize(
    ("status", "expected"), [(401, errors.UnauthorizedError), (403, errors.ForbiddenError)]
)
async def test_token_endpoint_refusal_names_the_source_not_the_secret(
    status: int, expected: type[errors.RegistryError]
) -> None:
    client, _ = make_client(AuthRegistry(token_status=status))
    with pytest.raises(expected) as caught:
        await client.get_manifest(ref(), credential=ALICE)
    assert "secret team-a/regcred" in caught.value.message
    assert "s3:cr:et" not in caught.value.message
    assert caught.value.registry == "reg.example"
    assert caught.value.repository == "team/model"


async def test_token_endpoint_rate_limit_and_failure() -> None:
    client, _ = make_client(AuthRegistry(token_status=429))
    with pytest.raises(errors.RateLimitedError):
        await client.get_manifest(ref())
    client, _ = make_client(AuthRegistry(token_status=500))
    with pytest.raises(errors.RegistryError):
        await client.get_manifest(ref())


@pytest.mark.parametrize(
    "realm",
    [
        "https://169.254.169.254/latest/meta-data/iam",
        "http://169.254.169.254/token",
        "https://[::ffff:169.254.169.254]/token",
        "https://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_realm_on_denied_host_is_refused_without_a_request(realm: str) -> None:
    client, seen = make_client(AuthRegistry(realm=realm))
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.get_manifest(ref(), credential=ALICE)
    assert seen.paths() == ["GET reg.example/v2/"]  # the realm came with the ping
    assert caught.value.registry == "reg.example"


async def test_realm_resolving_to_metadata_is_refused() -> None:
    resolver = FakeDNS(table={"auth.example": ["169.254.169.254"]})
    client, seen = make_client(AuthRegistry(), dns=resolver)
    with pytest.raises(errors.HostNotAllowedError):
        await client.get_manifest(ref(), credential=ALICE)
    assert seen.paths() == ["GET reg.example/v2/"]


async def test_realm_over_plain_http_is_refused() -> None:
    client, seen = make_client(AuthRegistry(realm="http://auth.example/token"))
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await client.get_manifest(ref(), credential=ALICE)
    assert "plain HTTP" in caught.value.message
    assert seen.paths() == ["GET reg.example/v2/"]


async def test_plain_http_realm_of_the_plain_http_registry_itself() -> None:
    body = modelkit_manifest()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "local"})
        if request.headers.get("authorization") == "Bearer local":
            return manifest_response(body)
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:5000/token"'}
        )

    policy = hosts.HostPolicy(
        registries={"127.0.0.1:5000": hosts.RegistryHostConfig(plain_http=True)}
    )
    client, seen = make_client(handler, policy=policy)
    await client.get_manifest(ref(registry="127.0.0.1:5000"))
    assert [str(r.url).split("?")[0] for r in seen.requests] == [
        "http://127.0.0.1:5000/v2/",
        "http://127.0.0.1:5000/token",
        "http://127.0.0.1:5000/v2/team/model/manifests/v1",
    ]


async def test_unsupported_challenge_is_unauthorized() -> None:
    client, _ = make_client(
        lambda request: httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})
    )
    with pytest.raises(errors.UnauthorizedError) as caught:
        await client.get_manifest(ref())
    assert "negotiate" in caught.value.message


async def test_refresh_grant_refused_falls_back_to_basic_get() -> None:
    registry = AuthRegistry()
    posts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example" and request.method == "POST":
            posts.append(request.url.path)
            return httpx.Response(405)
        return registry(request)

    credential = Credential(
        username="alice", password="s3:cr:et", identity_token="refresh", source="cfg"
    )
    client, _ = make_client(handler)
    await client.get_manifest(ref(), credential=credential)
    assert posts == ["/token"]
    (token_request,) = registry.token_requests
    assert token_request.method == "GET"
    assert token_request.headers["authorization"] == basic("alice", "s3:cr:et")


def test_a_401_reuses_a_newer_cached_token_and_forgets_the_refused_one() -> None:
    """After a 401, the token another request cached meanwhile is sent (no new fetch); the
    token the 401 refused is dropped and a fresh one fetched."""
    authenticator = auth.Authenticator(policy=hosts.HostPolicy())
    url = httpx.URL("https://reg.example/v2/team/model/manifests/v1")
    challenge = ['Bearer realm="https://auth.example/token",service="reg.example"']

    def after_401(refused: str | None) -> auth.Plan:
        return authenticator.on_challenge(
            url=url,
            repository="team/model",
            credential=None,
            www_authenticate=challenge,
            registry="reg.example",
            refused=refused,
        )

    first = after_401(None)
    assert isinstance(first, auth.TokenFetch)
    authenticator.tokens.put(first.key, "tok2", time.time() + 300)  # cached by another request

    assert after_401("Bearer tok1") == "Bearer tok2"  # tok1 refused: tok2 is newer, use it
    assert authenticator.tokens.get(first.key) == "tok2"

    again = after_401("Bearer tok2")  # tok2 itself refused: forget it, fetch a new one
    assert isinstance(again, auth.TokenFetch) and again.key == first.key
    assert authenticator.tokens.get(first.key) is None
