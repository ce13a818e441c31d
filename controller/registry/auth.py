"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, the Bearer token flow of
the distribution token spec, and a token cache. No I/O: token requests are built here and sent
by :mod:`.tokens` through :class:`~controller.registry.sender.Sender`, the one place that sends.

The flow, per registry endpoint (``scheme://host:port``, :func:`endpoint_key`):

1. Before the first request to an endpoint whose challenge is not known, the client sends
   ``GET /v2/`` once (the API version check, as the Docker client does), anonymous and
   without following redirects. A ``401`` carries challenges, parsed by
   :func:`parse_challenges`; :meth:`Authenticator.learn` remembers a usable one (Bearer with a
   realm, or Basic), so the first registry request already carries Basic or a Bearer token
   and costs one manifest request, not two. Any other answer (``200``: no auth needed for
   ``/v2/``; a ``401`` without a usable challenge, ``404``, ``5xx``, a redirect, a network
   error) teaches nothing and the request goes anonymous, as it would have without the check.
   The check is not repeated (for a while, when it failed: see :mod:`.ping`).
2. A registry request whose endpoint answered ``401`` anyway (a repository that needs auth
   behind an open ``/v2/``, a revoked token, a registry that does not serve ``/v2/``) hands
   its challenges to :meth:`Authenticator.on_challenge`, which remembers the challenge, and
   is sent once more with what it asks for, unless that is what was just refused (the same
   Basic value, or a token fetched for this very request).
3. ``Basic`` → the credential's ``username:password``.
   ``Bearer realm=...,service=...,scope=...`` → a token from the realm: ``GET`` with Basic
   auth (or anonymous), or, when the credential holds an identity token (OAuth2 refresh
   token), ``POST`` ``grant_type=refresh_token``. A ``registrytoken`` is sent as the bearer
   token as is.
4. Tokens are cached by (realm, service, scope, credential identity) until they expire, minus
   a small margin; later requests to an endpoint whose challenge is known send the cached
   token (or fetch one) up front. The client (:mod:`.tokens`) keeps one token request in
   flight per such key (:attr:`TokenFetch.key`): concurrent requests that need the same token
   wait for that one.

A realm must be ``https``, or ``http`` only when it is the plain-HTTP registry itself, and its
host passes the :class:`~controller.registry.hosts.HostPolicy`: a registry cannot send kitpin's
credentials, or kitpin, to the cloud metadata service.
"""

from __future__ import annotations

import base64
import datetime
import logging
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypedDict

import httpx

from controller import errors, jsonlimits, types
from controller.registry import hosts
from controller.types import Credential

__all__ = [
    "Authenticator",
    "Challenge",
    "Plan",
    "TokenCache",
    "TokenFetch",
    "TokenKey",
    "TokenResponse",
    "basic_authorization",
    "build_token_fetch",
    "check_realm",
    "default_scope",
    "describe_credential",
    "endpoint_key",
    "is_header_safe",
    "parse_challenges",
    "parse_token_response",
]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME: Final = 60.0
"""Seconds a token lives when the token endpoint does not say (the token spec's default)."""

MAX_TOKEN_LIFETIME: Final = 3600.0
"""A token is kept at most this long, whatever ``expires_in`` says (a registry's tokens live
minutes; a token revoked early is refused and fetched again anyway)."""

MAX_TOKEN_MARGIN: Final = 10.0
"""A token is dropped this many seconds (at most a tenth of its life) before it expires."""

CLIENT_ID: Final = "kitpin"
USER_AGENT: Final = "kitpin"

# -- challenges ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header."""

    scheme: str
    """Lowercased: ``basic``, ``bearer``, ..."""
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Parameter names lowercased; a token68 (``Negotiate abc==``) is stored under ``""``."""

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_TOKEN_CHARS: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_TOKEN68_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-._~+/")


def parse_challenges(values: Iterable[str]) -> tuple[Challenge, ...]:
    """Parse ``WWW-Authenticate`` header values (RFC 9110 §11.6.1): several challenges per
    value, quoted strings with commas and escapes, unquoted values, token68. Lenient: junk
    is skipped, never raised on."""
    found: list[Challenge] = []
    for value in values:
        found.extend(_parse_header(value))
    return tuple(found)


def _parse_header(text: str) -> list[Challenge]:
    n = len(text)
    challenges: list[tuple[str, dict[str, str]]] = []

    def skip(i: int, chars: str) -> int:
        while i < n and text[i] in chars:
            i += 1
        return i

    def token(i: int) -> tuple[str, int]:
        j = i
        while j < n and text[j] in _TOKEN_CHARS:
            j += 1
        return text[i:j], j

    def quoted(i: int) -> tuple[str, int]:  # text[i] == '"'
        out: list[str] = []
        i += 1
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
            elif c == '"':
                return "".join(out), i + 1
            else:
                out.append(c)
                i += 1
        return "".join(out), i

    def bare(i: int) -> tuple[str, int]:  # an unquoted value: up to a comma or blank
        j = i
        while j < n and text[j] not in ", \t":
            j += 1
        return text[i:j], j

    i = 0
    while i < n:
        i = skip(i, " \t,")
        if i >= n:
            break
        name, j = token(i)
        if not name:  # junk: skip to the next comma
            while i < n and text[i] != ",":
                i += 1
            continue
        k = skip(j, " \t")
        if k < n and text[k] == "=" and challenges:
            k = skip(k + 1, " \t")
            value, i = quoted(k) if k < n and text[k] == '"' else bare(k)
            challenges[-1][1].setdefault(name.lower(), value)
            continue
        if k < n and text[k] == "=":  # a parameter before any scheme: junk
            _, i = bare(k + 1)
            continue
        params: dict[str, str] = {}
        challenges.append((name.lower(), params))
        i = j
        if k > j:  # a token68 right after the scheme?
            m = k
            while m < n and text[m] in _TOKEN68_CHARS:
                m += 1
            m = skip(m, "=")
            end = skip(m, " \t")
            if m > k and (end >= n or text[end] == ",") and "=" not in text[k:m].rstrip("="):
                params[""] = text[k:m]
                i = end
    return [Challenge(scheme=s, params=MappingProxyType(p)) for s, p in challenges]


# -- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TokenKey:
    """What a bearer token is valid for."""

    realm: str
    service: str
    scope: str
    identity: str
    """:attr:`Credential.identity`, or :data:`controller.types.ANONYMOUS`."""


class TokenResponse(TypedDict, total=False):
    """The token endpoint's JSON answer (distribution token spec)."""

    token: str
    access_token: str
    expires_in: int
    issued_at: str
    refresh_token: str


def parse_token_response(body: bytes, *, now: float) -> tuple[str, float]:
    """``(token, expires_at)`` from a token endpoint's answer (decoded by
    :func:`controller.jsonlimits.loads`); ``expires_at`` is a :func:`time.time` instant
    already shortened by the safety margin, the lifetime at most :data:`MAX_TOKEN_LIFETIME`.
    Raises :class:`errors.BadResponseError` (without the registry fields: the caller adds
    them)."""
    try:
        document = jsonlimits.loads(body)
    except jsonlimits.DecodeError as e:
        raise errors.BadResponseError(
            f"the token endpoint answered with something else than JSON kitpin accepts ({e})"
        ) from e
    if not isinstance(document, dict):
        raise errors.BadResponseError("the token endpoint answered with JSON that is no object")
    answer: TokenResponse = document  # type: ignore[assignment]  # checked field by field
    value = answer.get("token") or answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise errors.BadResponseError(
            "the token endpoint answered without a token (neither token nor access_token)"
        )
    if not is_header_safe(value):
        raise errors.BadResponseError(
            "the token endpoint answered a token with characters that cannot be sent in an "
            "Authorization header (only visible ASCII can); the token service is broken"
        )
    lifetime = DEFAULT_TOKEN_LIFETIME
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        # Compared before any float(): an integer of hundreds of digits overflows a float.
        lifetime = MAX_TOKEN_LIFETIME if expires_in > MAX_TOKEN_LIFETIME else float(expires_in)
    # A token issued a while ago (say, by a caching proxy) has less life left. An issued_at
    # in the future is clock skew: then the lifetime counts from now.
    issued_at = _parse_time(answer.get("issued_at"))
    if issued_at is not None and 0 < now - issued_at < lifetime:
        lifetime -= now - issued_at
    elif issued_at is not None and now - issued_at >= lifetime:
        lifetime = 0.0
    return value, now + lifetime - min(MAX_TOKEN_MARGIN, lifetime / 10)


def is_header_safe(value: str) -> bool:
    """Whether ``value`` can follow ``Bearer`` in a header: visible ASCII only (a JWT, an
    opaque token). Anything else cannot be encoded by httpx, or splits the header."""
    return value.isascii() and value.isprintable() and " " not in value


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


class TokenCache:
    """Bearer tokens by :class:`TokenKey` until they expire. Bounded: when full, expired
    tokens go first, then the oldest."""

    def __init__(self, *, clock: Callable[[], float] = time.time, max_entries: int = 4096):
        self._clock = clock
        self._max_entries = max_entries
        self._tokens: dict[TokenKey, tuple[str, float]] = {}

    def get(self, key: TokenKey) -> str | None:
        found = self._tokens.get(key)
        if found is None:
            return None
        if found[1] <= self._clock():
            del self._tokens[key]
            return None
        return found[0]

    def put(self, key: TokenKey, token: str, expires_at: float) -> None:
        now = self._clock()
        if expires_at <= now:
            return
        self._tokens.pop(key, None)
        if len(self._tokens) >= self._max_entries:
            for stale in [k for k, (_, t) in self._tokens.items() if t <= now]:
                del self._tokens[stale]
            while len(self._tokens) >= self._max_entries:
                del self._tokens[next(iter(self._tokens))]
        self._tokens[key] = (token, expires_at)

    def discard(self, key: TokenKey) -> None:
        self._tokens.pop(key, None)

    def __len__(self) -> int:
        return len(self._tokens)


# -- deciding what to send ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TokenFetch:
    """A token request to send before the registry request can be (re)sent."""

    key: TokenKey
    request: httpx.Request
    fallback: httpx.Request | None = None
    """GET with Basic auth, for token servers that refuse the refresh-token POST with 404/405
    (only when the credential also has a username and password)."""
    credential_description: str
    """How messages name the credential used (its source, never its content)."""


Plan = str | TokenFetch | None
"""What to send: an ``Authorization`` header value, a token to fetch first, or nothing."""


def basic_authorization(credential: Credential) -> str | None:
    """``Basic base64(user:password)``, or None when the credential has no password."""
    if credential.username is None or credential.password is None:
        return None
    raw = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def default_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


class Authenticator:
    """Chooses the ``Authorization`` for each registry request; remembers each endpoint's
    challenge and caches tokens. No I/O (the client sends the :class:`TokenFetch` requests
    and hands the answers to :meth:`token_received`)."""

    def __init__(
        self,
        *,
        policy: hosts.HostPolicy,
        clock: Callable[[], float] = time.time,
        cache: TokenCache | None = None,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self.tokens = cache if cache is not None else TokenCache(clock=clock)
        self._challenges: dict[str, Challenge] = {}

    def knows(self, url: httpx.URL) -> bool:
        """Whether ``url``'s endpoint has sent a challenge kitpin remembers."""
        return endpoint_key(url) in self._challenges

    def learn(self, *, url: httpx.URL, www_authenticate: Iterable[str]) -> bool:
        """Remember the challenge of a ``401`` to the API version check (``GET /v2/``) of
        ``url``'s endpoint, so the first real request can answer it up front. Only a usable
        challenge is kept (Bearer with a realm, else Basic); True when one was. Never raises:
        a challenge kitpin cannot answer is left for the real request's ``401`` to report
        (:meth:`on_challenge`), with its usual message."""
        challenges = parse_challenges(www_authenticate)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        chosen = bearer or next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            return False
        self._challenges[endpoint_key(url)] = chosen
        logger.debug("auth challenge of %s learnt from /v2/: %s", endpoint_key(url), chosen.scheme)
        return True

    def plan(self, *, url: httpx.URL, repository: str, credential: Credential | None) -> Plan:
        """What to send up front to ``url``'s endpoint, from the challenge it sent before.
        None before any challenge: try anonymous first."""
        challenge = self._challenges.get(endpoint_key(url))
        if challenge is None:
            return None
        return self._answer(
            challenge,
            url=url,
            scope=default_scope(repository),
            credential=credential,
            use_cache=True,
        )

    def on_challenge(
        self,
        *,
        url: httpx.URL,
        repository: str,
        credential: Credential | None,
        www_authenticate: Iterable[str],
        registry: str,
        refused: str | None = None,
    ) -> Plan:
        """What to send after ``url`` answered 401 with these ``WWW-Authenticate`` values;
        None when nothing can be sent (no challenge, or Basic without a password: the 401
        stands). ``refused``: the ``Authorization`` value the 401 answered. A cached token
        for the same scope is reused only when it is not the one refused (another request
        cached a newer one meanwhile); the refused one is forgotten (it may be revoked).
        Raises :class:`errors.UnauthorizedError` for challenges kitpin cannot answer,
        :class:`errors.HostNotAllowedError` for a realm outside the host policy."""
        challenges = parse_challenges(www_authenticate)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        chosen = bearer or basic
        if chosen is None:
            if not challenges:
                return None
            offered = ", ".join(sorted({c.scheme for c in challenges}))
            raise errors.UnauthorizedError(
                f"{registry} asks for {offered} authentication; kitpin speaks Basic and Bearer "
                f"token auth only. Check the registry's auth setup, or the credentials for "
                f"{registry}",
                registry=registry,
                repository=repository,
            )
        self._challenges[endpoint_key(url)] = chosen
        if chosen is basic and (credential is None or basic_authorization(credential) is None):
            return None
        scope = chosen.params.get("scope") or default_scope(repository)
        logger.debug("auth challenge from %s: %s", registry, chosen.scheme)
        return self._answer(
            chosen, url=url, scope=scope, credential=credential, use_cache=False, refused=refused
        )

    def token_received(self, fetch: TokenFetch, body: bytes) -> str:
        """Cache the token in ``body`` and return the ``Authorization`` header value."""
        token, expires_at = parse_token_response(body, now=self._clock())
        self.tokens.put(fetch.key, token, expires_at)
        return f"Bearer {token}"

    def _answer(
        self,
        challenge: Challenge,
        *,
        url: httpx.URL,
        scope: str,
        credential: Credential | None,
        use_cache: bool,
        refused: str | None = None,
    ) -> Plan:
        if challenge.scheme == "basic":
            return None if credential is None else basic_authorization(credential)
        if credential is not None and credential.registry_token:
            return f"Bearer {credential.registry_token}"
        realm = check_realm(challenge.realm or "", registry_url=url, policy=self._policy)
        service = challenge.params.get("service", "")
        key = TokenKey(
            realm=str(realm),
            service=service,
            scope=scope,
            identity=types.identity_of(credential),
        )
        cached = self.tokens.get(key)
        if cached is not None and (use_cache or f"Bearer {cached}" != refused):
            return f"Bearer {cached}"
        if not use_cache:
            self.tokens.discard(key)
        return build_token_fetch(key, realm=realm, credential=credential)


def endpoint_key(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of ``url``: what challenges are remembered by, and what the
    client sends the API version check (``GET /v2/``) to once."""
    return f"{url.scheme}://{hosts.join_host_port(hosts.host_of(url), url.port)}"


def describe_credential(credential: Credential | None) -> str:
    """How messages name a credential: by its source, never its content."""
    if credential is None:
        return "an anonymous request (no credential)"
    return f"the credential from {credential.source or 'an unnamed source'}"


def check_realm(realm: str, *, registry_url: httpx.URL, policy: hosts.HostPolicy) -> httpx.URL:
    """The realm as a URL if kitpin may ask it for tokens, else
    :class:`errors.HostNotAllowedError`: ``https`` only, or ``http`` when the realm is the
    plain-HTTP registry itself; its host must pass the host policy."""
    registry = hosts.join_host_port(hosts.host_of(registry_url), registry_url.port)
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL as e:
        raise errors.BadResponseError(
            f"{registry} named a token realm that is not a URL; the registry's auth setup is "
            "broken",
            registry=registry,
        ) from e
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise errors.HostNotAllowedError(
            f"{registry} named the token realm {realm!r}, which is not an http(s) URL; "
            "kitpin will not use it",
            registry=registry,
        )
    if url.userinfo:
        raise errors.HostNotAllowedError(
            f"{registry} named a token realm with user information in it; kitpin will not use it",
            registry=registry,
        )
    realm_host = hosts.join_host_port(hosts.host_of(url), url.port)
    if url.scheme == "http":
        same = hosts.host_port_of(url) == hosts.host_port_of(registry_url)
        if not (same and registry_url.scheme == "http"):
            raise errors.HostNotAllowedError(
                f"{registry} named the token realm {url.scheme}://{realm_host} over plain "
                "HTTP; credentials would travel unprotected. Only the registry itself may be "
                "its plain-HTTP realm, when configured plainHTTP in the registry config",
                registry=registry,
            )
    policy.check(realm_host, purpose="token realm")
    return url


def build_token_fetch(
    key: TokenKey, *, realm: httpx.URL, credential: Credential | None
) -> TokenFetch:
    """The token request for ``key`` (pure): a refresh-token POST when the credential has an
    identity token, else a GET with Basic auth (or anonymous); like every request, it asks
    for the body as is (``Accept-Encoding: identity``)."""
    fields = {"scope": key.scope}
    if key.service:
        fields["service"] = key.service
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": "identity",  # the body as is: nothing to decompress
    }
    basic = basic_authorization(credential) if credential is not None else None

    def get() -> httpx.Request:
        params = dict(fields)
        get_headers = dict(headers)
        if credential is not None and credential.username and basic is not None:
            params["account"] = credential.username
        if basic is not None:
            get_headers["Authorization"] = basic
        return httpx.Request("GET", realm.copy_merge_params(params), headers=get_headers)

    described = describe_credential(credential)
    if credential is not None and credential.identity_token:
        form = {
            **fields,
            "grant_type": "refresh_token",
            "refresh_token": credential.identity_token,
            "client_id": CLIENT_ID,
        }
        post = httpx.Request("POST", realm, headers=headers, data=form)
        return TokenFetch(
            key=key,
            request=post,
            fallback=get() if basic is not None else None,
            credential_description=described,
        )
    return TokenFetch(key=key, request=get(), credential_description=described)
