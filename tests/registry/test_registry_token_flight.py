"""Token requests are single-flight: one in flight per token-cache key (realm, service,
scope, credential identity), joined by every request that needs that token while it runs;
never shared across credentials; a failure reaches every waiter in its own words and is not
remembered after the fetch."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from registry_fakes import (
    FakeClock,
    FakeDNS,
    is_ping,
    manifest_response,
    modelkit_manifest,
    ref,
)

from controller import errors
from controller.metrics import Metrics
from controller.registry import Credential, RegistryClient

REALM = "https://auth.example/token"
ALICE = Credential(username="alice", password="s3:cr:et", source="secret team-a/regcred")
BOB = Credential(username="bob", password="b0b", source="secret team-b/regcred")
ALICE_COPY = Credential(username="alice", password="s3:cr:et", source="secret team-c/copy")
"""The same secret as :data:`ALICE` from another source: the same credential identity."""
MALLORY = Credential(username="alice", password="guess", source="secret team-m/regcred")
"""Alice's account name with another password: another credential identity."""
USERS = {"alice": "s3:cr:et", "bob": "b0b"}


@dataclass(frozen=True)
class Issued:
    account: str | None
    scope: str


@dataclass
class Registry:
    """reg.example wants a bearer token from auth.example, which checks passwords. A token
    passes for the repository of its scope (when ``grant``) until :meth:`revoke`.

    Token requests take ``delay`` seconds, or wait for ``gate`` when set, so that concurrent
    requests arrive while one is in flight; ``fail`` answers them instead (or raises).
    Manifest requests take ``manifest_delay`` seconds."""

    delay: float = 0.02
    manifest_delay: float = 0.0
    gate: asyncio.Event | None = None
    fail: Callable[[httpx.Request], httpx.Response] | None = None
    grant: bool = True
    tokens: dict[str, Issued] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)

    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == "auth.example"]

    def manifest_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if "/manifests/" in r.url.path]

    def revoke(self) -> None:
        self.revoked.update(self.tokens)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "auth.example":
            return await self._token(request)
        if is_ping(request):
            challenge = f'Bearer realm="{REALM}",service="reg.example"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if self.manifest_delay:
            await asyncio.sleep(self.manifest_delay)
        repository = request.url.path.removeprefix("/v2/").partition("/manifests/")[0]
        scope = f"repository:{repository}:pull"
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        issued = self.tokens.get(token)
        if self.grant and issued is not None and issued.scope == scope:
            if token not in self.revoked:
                return manifest_response(modelkit_manifest())
        challenge = f'Bearer realm="{REALM}",service="reg.example",scope="{scope}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    async def _token(self, request: httpx.Request) -> httpx.Response:
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            return self.fail(request)
        account = None
        basic = basic_user(request)
        if basic is not None:
            if USERS.get(basic[0]) != basic[1]:
                return httpx.Response(401, json={"details": "invalid username or password"})
            account = basic[0]
        token = f"tok{len(self.tokens) + 1}"
        self.tokens[token] = Issued(account=account, scope=request.url.params["scope"])
        return httpx.Response(200, json={"token": token, "expires_in": 300})


def make(registry: Registry, **kwargs: object) -> RegistryClient:
    return RegistryClient(
        transport=httpx.MockTransport(registry),
        resolve=FakeDNS(),
        clock=FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )


def basic_user(request: httpx.Request) -> tuple[str, str] | None:
    given = request.headers.get("authorization")
    if given is None:
        return None
    user, _, password = base64.b64decode(given.removeprefix("Basic ")).decode().partition(":")
    return user, password


def token_of(request: httpx.Request) -> str:
    return request.headers["authorization"].removeprefix("Bearer ")


def subject(tag: str, repository: str = "team/model") -> str:
    return f"manifest reg.example/{repository}:{tag}"


async def until(condition: Callable[[], bool], *, within: float = 2.0) -> None:
    """Wait (briefly) until ``condition()`` holds; a TimeoutError if it does not."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.001)


def token_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("kitpin-token")]


TAGS = [f"v{i}" for i in range(1, 9)]


# -- one token request per key ------------------------------------------------------------------


async def test_concurrent_first_requests_for_tags_of_one_repository_fetch_one_token() -> None:
    registry = Registry()
    metrics = Metrics()
    async with make(registry, on_request=metrics.count_registry_request) as c:
        manifests = await asyncio.gather(
            *(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS)
        )
    assert all(m.digest.startswith("sha256:") for m in manifests)
    (token_request,) = registry.token_requests()
    assert token_request.url.params["scope"] == "repository:team/model:pull"
    # Each manifest request carried the one token from the start: no 401 round trip.
    assert [token_of(r) for r in registry.manifest_requests()] == ["tok1"] * len(TAGS)
    labels = {"registry": "reg.example"}
    assert metrics.value("kitpin_registry_requests_total", {**labels, "kind": "token"}) == 1
    assert metrics.value("kitpin_registry_requests_total", {**labels, "kind": "manifest"}) == 8


async def test_other_repositories_are_other_scopes_and_fetch_their_own_tokens() -> None:
    registry = Registry()
    async with make(registry) as c:
        await asyncio.gather(
            *(
                c.get_manifest(ref(repository=repository, tag=tag), credential=ALICE)
                for repository in ("team/a", "team/b")
                for tag in ("v1", "v2", "v3")
            )
        )
    scopes = sorted(r.url.params["scope"] for r in registry.token_requests())
    assert scopes == ["repository:team/a:pull", "repository:team/b:pull"]


async def test_the_same_secret_from_two_sources_shares_the_fetch() -> None:
    # Same credential identity, same token cache key: the token is theirs alike.
    registry = Registry()
    async with make(registry) as c:
        await asyncio.gather(
            c.get_manifest(ref(tag="v1"), credential=ALICE),
            c.get_manifest(ref(tag="v2"), credential=ALICE_COPY),
        )
    assert len(registry.token_requests()) == 1


# -- never across credentials -------------------------------------------------------------------


async def test_different_credentials_fetch_separate_tokens_concurrently() -> None:
    registry = Registry(gate=asyncio.Event())
    credentials = {"v1": ALICE, "v2": BOB, "v3": None, "v4": ALICE, "v5": BOB, "v6": None}
    async with make(registry) as c:
        calls = [
            asyncio.create_task(c.get_manifest(ref(tag=tag), credential=credential))
            for tag, credential in credentials.items()
        ]
        await until(lambda: len(registry.token_requests()) == 3)
        # Three fetches in flight at once, one per credential: none waits for another's.
        assert registry.gate is not None
        registry.gate.set()
        await asyncio.gather(*calls)
    assert sorted(r.url.params.get("account", "") for r in registry.token_requests()) == [
        "",
        "alice",
        "bob",
    ]
    for request in registry.manifest_requests():
        credential = credentials[request.url.path.rsplit("/", 1)[1]]
        expected = credential.username if credential is not None else None
        assert registry.tokens[token_of(request)].account == expected


async def test_a_wrong_password_for_the_same_account_never_gets_the_token_in_flight() -> None:
    registry = Registry()
    async with make(registry) as c:
        alice, mallory = await asyncio.gather(
            c.get_manifest(ref(tag="v1"), credential=ALICE),
            c.get_manifest(ref(tag="v2"), credential=MALLORY),
            return_exceptions=True,
        )
        assert not isinstance(alice, BaseException)
        assert isinstance(mallory, errors.UnauthorizedError)
        assert "secret team-m/regcred" in mallory.message
        assert "secret team-a/regcred" not in mallory.message
        # Nor the token alice's fetch cached.
        with pytest.raises(errors.UnauthorizedError):
            await c.get_manifest(ref(tag="v3"), credential=MALLORY)
    assert len(registry.token_requests()) == 3
    assert all(token_of(r) == "tok1" for r in registry.manifest_requests())
    assert len(registry.manifest_requests()) == 1  # mallory never reached the registry


# -- failures -----------------------------------------------------------------------------------


def fails(status: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, headers=headers)


def raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("fail", "expected", "says"),
    [
        (
            fails(401),
            errors.UnauthorizedError,
            "{subject}: the token service auth.example:443 of reg.example rejected the "
            "credential from secret team-a/regcred (401)",
        ),
        (
            fails(403),
            errors.ForbiddenError,
            "{subject}: the token service auth.example:443 of reg.example refused a token for "
            "team/model to the credential from secret team-a/regcred (403)",
        ),
        (
            fails(429, **{"Retry-After": "30"}),
            errors.RateLimitedError,
            "token for team/model from auth.example:443: reg.example is rate limiting kitpin",
        ),
        (
            fails(503),
            errors.RegistryError,
            "token for team/model from auth.example:443: reg.example failed with 503",
        ),
        (
            raises(httpx.ConnectError("refused")),
            errors.UnreachableError,
            "{subject}: cannot talk to auth.example:443 (ConnectError: refused)",
        ),
        (
            raises(httpx.ReadTimeout("slow")),
            errors.RegistryTimeoutError,
            "{subject}: auth.example:443 did not answer in time",
        ),
        (
            lambda request: httpx.Response(200, json={"nothing": "here"}),
            errors.BadResponseError,
            "reg.example: token service auth.example:443: the token endpoint answered without "
            "a token",
        ),
    ],
    ids=["401", "403", "429", "503", "connect-error", "timeout", "no-token"],
)
async def test_a_failed_fetch_fails_every_waiter_in_its_own_words_and_is_not_remembered(
    fail: Callable[[httpx.Request], httpx.Response],
    expected: type[errors.RegistryError],
    says: str,
) -> None:
    registry = Registry(fail=fail)
    async with make(registry) as c:
        outcomes = await asyncio.gather(
            *(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS),
            return_exceptions=True,
        )
        assert len(registry.token_requests()) == 1
        assert registry.manifest_requests() == []
        for tag, outcome in zip(TAGS, outcomes, strict=True):
            assert type(outcome) is expected
            assert isinstance(outcome, errors.RegistryError)
            assert outcome.message.startswith(says.format(subject=subject(tag)))
            assert (outcome.registry, outcome.repository) == ("reg.example", "team/model")
            if isinstance(outcome, errors.RateLimitedError):
                assert outcome.retry_after == 30
        assert len({id(o) for o in outcomes}) == len(TAGS)  # each waiter its own error

        # The failure went with the fetch: the next request asks again, and gets a token.
        registry.fail = None
        manifest = await c.get_manifest(ref(tag="v1"), credential=ALICE)
    assert manifest.digest.startswith("sha256:")
    assert len(registry.token_requests()) == 2


async def test_a_shared_failure_names_each_waiters_own_credential_source() -> None:
    registry = Registry(fail=fails(401))
    async with make(registry) as c:
        first, second = await asyncio.gather(
            c.get_manifest(ref(tag="v1"), credential=ALICE),
            c.get_manifest(ref(tag="v2"), credential=ALICE_COPY),
            return_exceptions=True,
        )
    assert len(registry.token_requests()) == 1
    assert isinstance(first, errors.UnauthorizedError)
    assert isinstance(second, errors.UnauthorizedError)
    assert "secret team-a/regcred" in first.message and "team-c" not in first.message
    assert "secret team-c/copy" in second.message and "team-a" not in second.message


# -- a token waited for counts as fetched for the request --------------------------------------


async def test_a_joined_token_refused_is_not_fetched_again() -> None:
    registry = Registry(grant=False)
    async with make(registry) as c:
        outcomes = await asyncio.gather(
            *(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS),
            return_exceptions=True,
        )
    assert all(isinstance(o, errors.UnauthorizedError) for o in outcomes)
    # One token for all, refused once per request; nobody fetched another.
    assert len(registry.token_requests()) == 1
    assert [token_of(r) for r in registry.manifest_requests()] == ["tok1"] * len(TAGS)


async def test_a_revoked_token_is_replaced_once_for_concurrent_requests() -> None:
    registry = Registry(delay=0.05)
    async with make(registry) as c:
        await c.get_manifest(ref(tag="v1"), credential=ALICE)
        registry.revoke()
        registry.manifest_delay = 0.01  # all send the cached token before any hears 401
        manifests = await asyncio.gather(
            *(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS)
        )
    assert all(m.digest.startswith("sha256:") for m in manifests)
    # Each request met 401 with the revoked token and asked for a new one: one was fetched.
    assert len(registry.token_requests()) == 2
    sent = [token_of(r) for r in registry.manifest_requests()[1:]]
    assert sorted(sent) == ["tok1"] * len(TAGS) + ["tok2"] * len(TAGS)


# -- cancellation -------------------------------------------------------------------------------


async def test_a_waiter_leaving_does_not_cancel_the_fetch_for_the_others() -> None:
    registry = Registry(gate=asyncio.Event())
    async with make(registry) as c:
        impatient = asyncio.create_task(c.get_manifest(ref(tag="v1"), credential=ALICE))
        patient = asyncio.create_task(c.get_manifest(ref(tag="v2"), credential=ALICE))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # its own deadline, as the resolver sets one
                await impatient
        assert registry.gate is not None
        registry.gate.set()
        manifest = await patient
    assert manifest.digest.startswith("sha256:")
    assert len(registry.token_requests()) == 1
    assert [r.url.path.rsplit("/", 1)[1] for r in registry.manifest_requests()] == ["v2"]
    assert token_of(registry.manifest_requests()[0]) == "tok1"


async def test_a_fetch_everyone_left_still_caches_its_token() -> None:
    registry = Registry(gate=asyncio.Event())
    async with make(registry) as c:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await c.get_manifest(ref(tag="v1"), credential=ALICE)
        (fetch,) = token_tasks()
        assert registry.gate is not None
        registry.gate.set()
        await asyncio.wait([fetch])
        await c.get_manifest(ref(tag="v2"), credential=ALICE)
    assert len(registry.token_requests()) == 1
    assert [token_of(r) for r in registry.manifest_requests()] == ["tok1"]


async def test_aclose_cancels_a_fetch_in_flight_and_its_waiters_get_an_error() -> None:
    registry = Registry(gate=asyncio.Event())  # never set: the token endpoint hangs
    c = make(registry)
    callers = [
        asyncio.create_task(c.get_manifest(ref(tag=tag), credential=ALICE)) for tag in TAGS[:3]
    ]
    await until(lambda: bool(registry.token_requests()))
    async with asyncio.timeout(5):
        await c.aclose()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert not token_tasks()
    for tag, outcome in zip(TAGS, outcomes, strict=False):
        assert type(outcome) is errors.RegistryError
        assert outcome.message.startswith(f"{subject(tag)}: the token request to auth.example")
        assert "closing" in outcome.message
    assert len(registry.token_requests()) == 1


# -- the ping still comes first -----------------------------------------------------------------


async def test_one_ping_then_one_token_then_the_manifests() -> None:
    registry = Registry()
    async with make(registry) as c:
        await asyncio.gather(*(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS))
    kinds = [
        "ping" if is_ping(r) else "token" if r.url.host == "auth.example" else "manifest"
        for r in registry.requests
    ]
    assert kinds == ["ping", "token", *["manifest"] * len(TAGS)]


async def test_a_fetch_that_hangs_is_given_up_for_every_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controller.registry.tokens.TOKEN_DEADLINE_SECONDS", 0.05)
    registry = Registry(gate=asyncio.Event())  # the token endpoint hangs
    async with make(registry) as c:
        async with asyncio.timeout(5):
            outcomes = await asyncio.gather(
                *(c.get_manifest(ref(tag=tag), credential=ALICE) for tag in TAGS[:3]),
                return_exceptions=True,
            )
        assert not token_tasks()
        for tag, outcome in zip(TAGS, outcomes, strict=False):
            assert type(outcome) is errors.RegistryTimeoutError
            assert outcome.message.startswith(
                f"{subject(tag)}: the token service auth.example:443 of reg.example gave no "
                "token within"
            )
        # Given up, not remembered: the next request asks again.
        assert registry.gate is not None
        registry.gate.set()
        await c.get_manifest(ref(tag="v1"), credential=ALICE)
    assert len(registry.token_requests()) == 2
