"""The API version check (``GET /v2/``, the "ping") before the first request to an endpoint
whose auth challenge is unknown: one per endpoint, learns the challenge so the first manifest
request goes authenticated, never fails a resolution, never carries credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from registry_fakes import (
    FakeClock,
    FakeDNS,
    api_root_ok,
    is_ping,
    make_client,
    manifest_response,
    modelkit_manifest,
    ref,
)

from controller import errors
from controller.metrics import Metrics
from controller.registry import Credential, RegistryClient, hosts
from controller.registry.auth import Authenticator
from controller.registry.ping import PING_RETRY_SECONDS
from controller.registry.requests import build_ping_request

CHALLENGE = 'Bearer realm="https://auth.example/token",service="reg.example"'
MANIFEST = "GET reg.example/v2/team/model/manifests/v1"
PING = "GET reg.example/v2/"
TOKEN = "GET auth.example/token"


@dataclass
class TokenRegistry:
    """reg.example wants a bearer token from auth.example; every token issued stays valid
    (so concurrent requests do not invalidate each other's). ``grant``: whether tokens give
    pull access at all."""

    grant: bool = True
    issued: list[str] = field(default_factory=list)
    v2: Callable[[httpx.Request], httpx.Response] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token = f"tok{len(self.issued) + 1}"
            self.issued.append(token)
            return httpx.Response(200, json={"token": token, "expires_in": 300})
        if is_ping(request) and self.v2 is not None:
            return self.v2(request)
        given = request.headers.get("authorization", "")
        if self.grant and given.removeprefix("Bearer ") in {*self.issued, "static"}:
            return api_root_ok() if is_ping(request) else manifest_response(modelkit_manifest())
        challenge = CHALLENGE
        if not is_ping(request):
            challenge += f',scope="repository:{request.url.path.split("/")[2]}/model:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})


def answer(status: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, headers=headers)


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


ALICE = Credential(username="alice", password="s3:cr:et", source="secret team-a/regcred")


# -- learning the challenge ---------------------------------------------------------------------


async def test_ping_401_sends_the_first_manifest_request_with_a_token() -> None:
    registry = TokenRegistry()
    metrics = Metrics()
    c, seen = make_client(registry, on_request=metrics.count_registry_request)
    await c.get_manifest(ref(), credential=ALICE)
    assert seen.paths() == [PING, TOKEN, MANIFEST]
    assert seen.requests[-1].headers["authorization"] == "Bearer tok1"
    for kind, count in [("ping", 1), ("token", 1), ("manifest", 1)]:
        labels = {"registry": "reg.example", "kind": kind}
        assert metrics.value("kitpin_registry_requests_total", labels) == count


@pytest.mark.parametrize(
    "credential",
    [
        ALICE,
        Credential(username="<token>", identity_token="refresh-me", source="cfg"),
        Credential(registry_token="static", source="cfg"),
    ],
    ids=["basic", "identity-token", "registry-token"],
)
async def test_the_ping_never_carries_credentials(credential: Credential) -> None:
    c, seen = make_client(TokenRegistry())
    await c.get_manifest(ref(), credential=credential)
    (ping,) = seen.pings()
    assert "authorization" not in ping.headers
    assert ping.url.query == b""
    assert ping.content == b""
    assert seen.requests[0] is ping  # and it went before anything else


async def test_basic_challenge_of_the_ping_is_answered_up_front() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization", "").startswith("Basic "):
            return api_root_ok() if is_ping(request) else manifest_response(modelkit_manifest())
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    c, seen = make_client(handler)
    await c.get_manifest(ref(), credential=ALICE)
    assert seen.paths() == [PING, MANIFEST]
    assert seen.requests[1].headers["authorization"].startswith("Basic ")


async def test_ping_200_then_a_repository_401_still_goes_through_the_challenge(
    clock: FakeClock,
) -> None:
    registry = TokenRegistry(v2=lambda request: api_root_ok())
    c, seen = make_client(registry, clock=clock)
    await c.get_manifest(ref(), credential=ALICE)
    assert seen.paths() == [PING, MANIFEST, TOKEN, MANIFEST]
    clock.advance(PING_RETRY_SECONDS * 10)
    await c.get_manifest(ref(), credential=ALICE)
    # No second ping: the challenge is known now, answered up front (the token expired).
    assert seen.paths()[4:] == [TOKEN, MANIFEST]


async def test_ping_200_on_an_open_registry_is_remembered(clock: FakeClock) -> None:
    c, seen = make_client(lambda request: manifest_response(modelkit_manifest()), clock=clock)
    await c.get_manifest(ref())
    clock.advance(PING_RETRY_SECONDS * 10)
    await c.get_manifest(ref(repository="team/other"))
    await c.get_manifest(ref())
    assert len(seen.pings()) == 1
    assert len(seen.calls()) == 3


async def test_a_known_challenge_is_not_pinged_again(clock: FakeClock) -> None:
    registry = TokenRegistry()
    c, seen = make_client(registry, clock=clock)
    await c.get_manifest(ref(), credential=ALICE)
    clock.advance(PING_RETRY_SECONDS * 10)  # the token expired too
    await c.get_manifest(ref(repository="team/other"), credential=ALICE)
    assert len(seen.pings()) == 1
    assert seen.paths()[3:] == [TOKEN, "GET reg.example/v2/team/other/manifests/v1"]


async def test_one_endpoint_one_ping_each() -> None:
    policy = hosts.HostPolicy(
        registries={"127.0.0.1:5000": hosts.RegistryHostConfig(plain_http=True)}
    )
    c, seen = make_client(lambda request: manifest_response(modelkit_manifest()), policy=policy)
    for registry in ["reg.example", "reg.example:443", "127.0.0.1:5000", "docker.io"]:
        await c.get_manifest(ref(registry=registry))
    assert [str(r.url) for r in seen.pings()] == [
        "https://reg.example/v2/",  # reg.example:443 is the same endpoint
        "http://127.0.0.1:5000/v2/",
        "https://registry-1.docker.io/v2/",
    ]


# -- single flight ------------------------------------------------------------------------------


def async_client(
    handler: Callable[[httpx.Request], Awaitable[httpx.Response]], **kwargs: object
) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await handler(request)

    c = RegistryClient(
        transport=httpx.MockTransport(record),
        resolve=FakeDNS(),
        clock=FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )
    return c, seen


async def test_many_concurrent_first_requests_send_one_ping() -> None:
    registry = TokenRegistry()

    async def handler(request: httpx.Request) -> httpx.Response:
        if is_ping(request):
            await asyncio.sleep(0.02)  # everyone else arrives while it is in flight
        return registry(request)

    counted: list[tuple[str, str]] = []
    c, seen = async_client(handler, on_request=lambda r, k: counted.append((r, k)))
    async with c:
        await asyncio.gather(
            *(c.get_manifest(ref(repository=f"team{i}/model"), credential=ALICE) for i in range(50))
        )
    assert [r for r in seen if is_ping(r)] == [seen[0]]
    manifests = [r for r in seen if "/manifests/" in r.url.path]
    assert len(manifests) == 50  # each one authenticated at once: no 401 round trip
    assert all(r.headers["authorization"].startswith("Bearer ") for r in manifests)
    assert counted.count(("reg.example", "ping")) == 1


async def test_a_caller_leaving_does_not_cancel_the_ping_for_the_others() -> None:
    registry = TokenRegistry()
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if is_ping(request):
            await release.wait()
        return registry(request)

    c, seen = async_client(handler)
    async with c:
        impatient = asyncio.create_task(c.get_manifest(ref(), credential=ALICE))
        patient = asyncio.create_task(c.get_manifest(ref(), credential=ALICE))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):  # its own deadline, as the resolver sets one
                await impatient
        release.set()
        manifest = await patient
    assert manifest.digest.startswith("sha256:")
    assert [r.url.path for r in seen if is_ping(r)] == ["/v2/"]
    assert seen[-1].headers["authorization"] == "Bearer tok1"


async def test_a_ping_that_hangs_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controller.registry.ping.PING_DEADLINE_SECONDS", 0.02)

    async def handler(request: httpx.Request) -> httpx.Response:
        if is_ping(request):
            await asyncio.sleep(10)
        return manifest_response(modelkit_manifest())

    c, seen = async_client(handler)
    async with c:
        async with asyncio.timeout(5):
            await c.get_manifest(ref())
            await c.get_manifest(ref())
    assert [r.url.path for r in seen] == ["/v2/", *["/v2/team/model/manifests/v1"] * 2]


async def test_aclose_ends_a_ping_in_flight() -> None:
    started = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(10)
        raise AssertionError("unreachable")  # pragma: no cover

    c, _ = async_client(handler)
    caller = asyncio.create_task(c.get_manifest(ref()))
    await started.wait()
    caller.cancel()
    async with asyncio.timeout(5):
        await c.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("kitpin-ping")]
    with pytest.raises(asyncio.CancelledError):
        await caller


# -- a ping that teaches nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "v2",
    [
        answer(404),
        answer(405),
        answer(500),
        answer(503),
        answer(429, **{"Retry-After": "60"}),
        answer(401),  # no challenge
        answer(401, **{"WWW-Authenticate": "Negotiate"}),
        answer(307, Location="https://auth.example/elsewhere"),
        raising(httpx.ConnectError("refused")),
        raising(httpx.ReadTimeout("slow")),
        raising(httpx.RemoteProtocolError("garbage")),
    ],
    ids=[
        "404",
        "405",
        "500",
        "503",
        "429",
        "401-bare",
        "401-negotiate",
        "redirect",
        "connect-error",
        "timeout",
        "protocol-error",
    ],
)
async def test_a_failed_ping_leaves_the_resolution_as_before(
    v2: Callable[[httpx.Request], httpx.Response], clock: FakeClock
) -> None:
    registry = TokenRegistry(v2=v2)
    c, seen = make_client(registry, clock=clock)
    manifest = await c.get_manifest(ref(), credential=ALICE)
    assert manifest.digest.startswith("sha256:")
    assert seen.paths() == [PING, MANIFEST, TOKEN, MANIFEST]  # the redirect not followed


@pytest.mark.parametrize(
    "v2",
    [answer(404), answer(502), raising(httpx.ConnectError("refused"))],
    ids=["404", "502", "connect-error"],
)
async def test_a_failed_ping_is_repeated_only_after_a_while(
    v2: Callable[[httpx.Request], httpx.Response], clock: FakeClock
) -> None:
    c, seen = make_client(
        lambda request: manifest_response(modelkit_manifest()), v2=v2, clock=clock
    )
    await c.get_manifest(ref())
    assert seen.paths() == [PING, MANIFEST]
    clock.advance(PING_RETRY_SECONDS - 1)
    await c.get_manifest(ref())
    await c.get_manifest(ref(repository="team/other"))
    assert len(seen.pings()) == 1
    clock.advance(2)
    await c.get_manifest(ref())
    assert len(seen.pings()) == 2
    assert len(seen.calls()) == 4


@pytest.mark.parametrize(
    ("exc", "expected", "says"),
    [
        (httpx.ConnectError("refused"), errors.UnreachableError, "cannot talk to reg.example:443"),
        (httpx.ConnectTimeout("slow"), errors.RegistryTimeoutError, "did not answer in time"),
    ],
)
async def test_an_unreachable_registry_fails_with_the_manifest_error_not_the_ping_error(
    exc: Exception, expected: type[errors.RegistryError], says: str
) -> None:
    c, seen = make_client(raising(exc))
    with pytest.raises(errors.RegistryError) as caught:
        await c.get_manifest(ref())
    assert type(caught.value) is expected
    assert caught.value.message.startswith(f"manifest {ref().canonical}: ")
    assert says in caught.value.message
    assert (caught.value.registry, caught.value.repository) == ("reg.example", "team/model")
    assert seen.paths() == [PING, MANIFEST]


@pytest.mark.parametrize("status", [404, 500])
async def test_a_registry_failing_everywhere_fails_with_the_manifest_error(status: int) -> None:
    c, seen = make_client(answer(status))
    with pytest.raises(errors.RegistryError) as caught:
        await c.get_manifest(ref())
    assert caught.value.message.startswith(f"manifest {ref().canonical}")
    assert seen.paths() == [PING, MANIFEST]


# -- host policy --------------------------------------------------------------------------------


async def test_a_blocked_registry_is_not_pinged() -> None:
    policy = hosts.HostPolicy(allowed_registries=("*.example.com",))
    c, seen = make_client(answer(200), policy=policy)
    with pytest.raises(errors.HostNotAllowedError):
        await c.get_manifest(ref())
    with pytest.raises(errors.HostNotAllowedError):
        await c.get_manifest(ref(registry="169.254.169.254"))
    assert seen.requests == []


async def test_a_name_resolving_into_a_denied_network_is_not_pinged(dns: FakeDNS) -> None:
    dns.table["reg.example"] = ["169.254.169.254"]
    c, seen = make_client(answer(200), dns=dns)
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await c.get_manifest(ref())
    assert seen.requests == []
    # The error is the manifest request's, as without the ping.
    assert caught.value.message.startswith(f"manifest {ref().canonical}: ")
    assert "169.254.169.254" in caught.value.message
    assert caught.value.registry == "reg.example"


async def test_a_ping_challenge_naming_a_denied_realm_is_refused_like_a_manifest_one() -> None:
    metadata = 'Bearer realm="https://169.254.169.254/token",service="x"'
    c, seen = make_client(answer(401, **{"WWW-Authenticate": metadata}))
    with pytest.raises(errors.HostNotAllowedError) as caught:
        await c.get_manifest(ref(), credential=ALICE)
    assert caught.value.message.startswith(f"manifest {ref().canonical}: ")
    assert seen.paths() == [PING]  # the manifest request would have been refused the same


# -- a fresh token refused ----------------------------------------------------------------------


async def test_a_fresh_token_refused_is_not_fetched_again() -> None:
    registry = TokenRegistry(grant=False)
    c, seen = make_client(registry)
    with pytest.raises(errors.UnauthorizedError) as caught:
        await c.get_manifest(ref(), credential=ALICE)
    assert "secret team-a/regcred" in caught.value.message
    assert seen.paths() == [PING, TOKEN, MANIFEST]


# -- pure pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ping"),
    [
        ("https://reg.example/v2/team/model/manifests/v1", "https://reg.example/v2/"),
        ("http://127.0.0.1:5000/v2/a/b/blobs/sha256:00?x=1", "http://127.0.0.1:5000/v2/"),
        ("https://[fd12::1]:5443/v2/a/manifests/v1", "https://[fd12::1]:5443/v2/"),
    ],
)
def test_build_ping_request(url: str, ping: str) -> None:
    request = build_ping_request(httpx.URL(url))
    assert (request.method, str(request.url)) == ("GET", ping)
    assert "authorization" not in request.headers
    assert request.headers["user-agent"] == "kitpin"


@pytest.mark.parametrize(
    ("values", "scheme"),
    [
        ([CHALLENGE], "bearer"),
        (['Basic realm="r"'], "basic"),
        (['Basic realm="r", Bearer realm="https://auth.example/t"'], "bearer"),
        (["Bearer service=no-realm", 'Basic realm="r"'], "basic"),
        (["Bearer service=no-realm"], None),
        (["Negotiate"], None),
        ([], None),
    ],
)
def test_learn_keeps_only_a_usable_challenge(values: list[str], scheme: str | None) -> None:
    authenticator = Authenticator(policy=hosts.HostPolicy())
    url = httpx.URL("https://reg.example/v2/")
    assert authenticator.learn(url=url, www_authenticate=values) is (scheme is not None)
    assert authenticator.knows(httpx.URL("https://reg.example:443/v2/x/manifests/y")) is (
        scheme is not None
    )
    assert not authenticator.knows(httpx.URL("http://reg.example/v2/"))
    plan = authenticator.plan(url=url, repository="team/model", credential=ALICE)
    if scheme == "basic":
        assert isinstance(plan, str) and plan.startswith("Basic ")
    elif scheme == "bearer":
        assert not isinstance(plan, str) and plan is not None
        assert plan.key.scope == "repository:team/model:pull"
    else:
        assert plan is None
