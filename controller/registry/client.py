"""The OCI distribution client: fetch a manifest (and a config blob), verify the bytes
locally, ask for a manifest's digest alone (``HEAD``), and turn every failure into an
:mod:`controller.errors` ``RegistryError``.

:class:`RegistryClient` is the public API; the request cycle it runs is made of one module
per concern:

- :mod:`.requests` builds the requests, pure functions (the token requests are built by
  :mod:`.auth`, which plans what ``Authorization`` to send: no I/O either);
- :mod:`.sender` is the only place that sends: host policy, DNS (:mod:`.dns`), the
  ``httpx.AsyncClient`` for the host's TLS settings, redirects;
- :mod:`.ping` sends the API version check ``GET /v2/`` once per endpoint, to learn its auth
  challenge before the first request;
- :mod:`.tokens` fetches bearer tokens, one request in flight per token-cache key;
- :mod:`.responses` reads bodies with a hard size cap (as received: a body in a
  ``Content-Encoding`` kitpin did not ask for is refused, never decompressed), decodes JSON
  with bounded values and depth (:mod:`controller.jsonlimits`), verifies digests and maps
  status codes and transport failures to errors.

:meth:`RegistryClient.head_digest` sends the manifest request as a ``HEAD`` through the
same cycle and reads the digest from ``Docker-Content-Digest`` (no body, nothing to verify).

A request goes up front with what its endpoint's known challenge asks for (learnt by the API
version check when unknown yet), and once more after a ``401`` with what that challenge asks
for, unless that is what was just refused. A manifest's digest is the sha256 of the exact
bytes received, checked against ``Docker-Content-Digest`` and against the digest the
reference carried.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final

import httpx

from controller import artifacts, errors, refs, types
from controller.registry import auth, hosts, requests, responses
from controller.registry.dns import system_resolve
from controller.registry.ping import Pinger
from controller.registry.responses import Answer, Target
from controller.registry.sender import DEFAULT_TIMEOUT, ClientFactory, RequestKind, Sender
from controller.registry.tokens import TokenFetcher
from controller.registry.transport import Resolve

__all__ = [
    "DEFAULT_MAX_CONFIG_BYTES",
    "DEFAULT_MAX_MANIFEST_BYTES",
    "DEFAULT_TIMEOUT",
    "ClientFactory",
    "RegistryClient",
    "RequestKind",
    "Resolve",
]

MiB: Final = 1024 * 1024
DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * MiB
DEFAULT_MAX_CONFIG_BYTES: Final = 1 * MiB

_DIGEST: Final = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_SHA256: Final = re.compile(r"sha256:[0-9a-f]{64}")


class RegistryClient:
    """Async OCI distribution client. One per process: it pools connections and caches
    tokens. Use it as an async context manager, or call :meth:`aclose`."""

    def __init__(
        self,
        policy: hosts.HostPolicy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        client_factory: ClientFactory | None = None,
        max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
        max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        resolve: Resolve = system_resolve,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[str, RequestKind], None] | None = None,
    ) -> None:
        """``policy``: the host policy (default: :class:`HostPolicy` defaults).
        ``transport``: send everything through this transport (tests: ``httpx.MockTransport``);
        ``client_factory``: or make each ``AsyncClient`` from its ``ssl.SSLContext``.
        ``resolve``: the DNS lookup whose answers the host policy checks.
        ``clock``: wall clock for token expiry and ``Retry-After`` dates.
        ``on_request(registry, kind)``: called for every HTTP request sent (metrics); the API
        version check is kind ``ping``, :meth:`head_digest`'s requests kind ``head``."""
        if transport is not None and client_factory is not None:
            raise ValueError("pass transport or client_factory, not both")
        self._policy = policy if policy is not None else hosts.HostPolicy()
        self._max_manifest_bytes = max_manifest_bytes
        self._max_config_bytes = max_config_bytes
        self._clock = clock
        self._auth = auth.Authenticator(policy=self._policy, clock=clock)
        self._sender = Sender(
            self._policy,
            transport=transport,
            client_factory=client_factory,
            timeout=timeout,
            resolve=resolve,
            on_request=on_request,
        )
        self._pinger = Pinger(self._sender, self._auth, clock)
        self._tokens = TokenFetcher(self._sender, self._auth, clock)

    @property
    def policy(self) -> hosts.HostPolicy:
        return self._policy

    @property
    def tokens(self) -> auth.TokenCache:
        return self._auth.tokens

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the API version checks and token requests in flight (requests waiting for a
        token get a :class:`errors.RegistryError`), then close the connection pools."""
        await self._pinger.aclose()
        await self._tokens.aclose()
        await self._sender.aclose()

    # -- public API --------------------------------------------------------------------------

    async def get_manifest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> types.Manifest:
        """Fetch and verify the manifest ``ref`` names (its digest if it carries one, else its
        tag). The returned digest is computed from the bytes received. Raises only
        :class:`errors.RegistryError` subclasses."""
        target = Target(
            registry=ref.registry, repository=ref.repository, subject=f"manifest {ref.canonical}"
        )
        self._check_registry(target)
        if ref.digest is not None and not _DIGEST.match(ref.digest):
            raise target.error(
                errors.BadResponseError, f"{ref.digest!r} is not a sha256/sha512 digest"
            )
        answer = await self._request(
            lambda authorization: requests.build_manifest_request(
                self._policy, ref, authorization=authorization
            ),
            target=target,
            credential=credential,
            kind="manifest",
            limit=self._max_manifest_bytes,
        )
        digest = self._verify(answer, expected=ref.digest, target=target)
        document = responses.json_object(answer.body, target=target)
        content_type = answer.headers.get("content-type", "").partition(";")[0].strip()
        try:
            return artifacts.parse_manifest(
                document, digest=digest, content_type=content_type, size=len(answer.body)
            )
        except errors.RegistryError as e:
            if e.registry:
                raise
            raise target.error(errors.BadResponseError, e.message) from e

    async def head_digest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> str:
        """The ``Docker-Content-Digest`` of a ``HEAD`` of the manifest ``ref`` names (its
        digest if it carries one, else its tag), ``sha256:<64 hex>``: the digest only, no body
        read (a HEAD does not count against Docker Hub's pull limit). Sent as
        :meth:`get_manifest` sends its GET (same ``Accept``, API version check, auth, host
        policy, redirects, timeouts), counted as kind ``head``. Nothing is verified against
        bytes: fetch the manifest by the digest returned (:meth:`get_manifest`) to trust it.
        A 404 is a :class:`errors.NotFoundError`; raises only :class:`errors.RegistryError`
        subclasses."""
        target = Target(
            registry=ref.registry, repository=ref.repository, subject=f"manifest {ref.canonical}"
        )
        self._check_registry(target)
        if ref.digest is not None and not _DIGEST.match(ref.digest):
            raise target.error(
                errors.BadResponseError, f"{ref.digest!r} is not a sha256/sha512 digest"
            )
        answer = await self._request(
            lambda authorization: requests.build_manifest_request(
                self._policy, ref, authorization=authorization, method="HEAD"
            ),
            target=target,
            credential=credential,
            kind="head",
            limit=0,
        )
        values = answer.headers.get_list("docker-content-digest")
        if not values:
            raise target.error(
                errors.BadResponseError,
                "the registry did not return a digest for HEAD (no Docker-Content-Digest "
                "header), so kitpin cannot tell which digest it names without downloading the "
                "manifest. Configure the registry, or the proxy in front of it, to send "
                "Docker-Content-Digest on manifest requests, as the OCI distribution spec says",
            )
        digest = values[0].strip()
        if len(values) > 1 or not _SHA256.fullmatch(digest):
            shown = ", ".join(values)
            shown = repr(shown[:100] + "…" if len(shown) > 100 else shown)
            raise target.error(
                errors.BadResponseError,
                f"the registry did not return a digest for HEAD: Docker-Content-Digest is "
                f"{shown}, not one sha256:<64 hex digits>. The registry, or a proxy in front "
                "of it, is misbehaving: fix it, or fetch the manifest with a GET instead",
            )
        if ref.digest is not None and digest != ref.digest:
            raise target.error(
                errors.DigestMismatchError,
                f"asked for {ref.digest}, the registry answered Docker-Content-Digest "
                f"{digest}. The registry, or something between kitpin and it (a proxy, a "
                "cache), is serving another manifest than the one named",
            )
        return digest

    async def get_config(
        self,
        ref: refs.Reference,
        manifest: types.Manifest,
        *,
        credential: types.Credential | None = None,
    ) -> Mapping[str, object]:
        """Fetch ``manifest``'s config blob (following a redirect to blob storage), verify it
        hashes to the config digest, and return it as a JSON object."""
        target = Target(
            registry=ref.registry,
            repository=ref.repository,
            subject=f"config blob of {ref.canonical}",
        )
        self._check_registry(target)
        digest = manifest.config_digest
        if digest is None:
            raise target.error(
                errors.BadResponseError,
                f"the manifest ({manifest.format}, {manifest.media_type}) has no config; it is "
                "not a single-artifact manifest",
            )
        if not _DIGEST.match(digest):
            raise target.error(
                errors.BadResponseError,
                f"config digest {digest!r} is not a sha256/sha512 digest; the manifest is "
                "malformed",
            )
        if manifest.config_size is not None and manifest.config_size > self._max_config_bytes:
            raise target.error(
                errors.ManifestTooLargeError,
                f"the manifest declares {manifest.config_size} bytes, more than the "
                f"{self._max_config_bytes}-byte limit for config blobs; a Kitfile is a few "
                "KiB, so this is not read",
            )
        answer = await self._request(
            lambda authorization: requests.build_blob_request(
                self._policy, ref, digest, authorization=authorization
            ),
            target=target,
            credential=credential,
            kind="blob",
            limit=self._max_config_bytes,
        )
        self._verify(answer, expected=digest, target=target)
        return responses.json_object(answer.body, target=target)

    async def get_referrers(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        credential: types.Credential | None = None,
    ) -> Mapping[str, object]:
        """The OCI image index of the manifests whose ``subject`` is ``digest`` in ``ref``'s
        repository, as a JSON object (its ``manifests`` are the referrers' descriptors, each
        with its ``artifactType`` and annotations; unchecked: the caller reads what it needs).

        Asks the OCI 1.1 referrers API, ``GET /v2/<repository>/referrers/<digest>``; a
        registry without it answers 404, and then the tag schema the OCI distribution spec
        gives as its fallback is read: the index tagged ``sha256-<hex>`` (what pushing tools
        maintain there, cosign and oras among them). Neither there: an empty index. Sent
        through the same cycle as :meth:`get_manifest` (API version check, auth, host policy,
        redirects, the manifest size cap, bounded JSON), counted as kind ``manifest``; only
        the first page of a paginated answer (``Link``) is read. Raises only
        :class:`errors.RegistryError` subclasses."""
        target = Target(
            registry=ref.registry,
            repository=ref.repository,
            subject=f"referrers of {ref.canonical_name}@{digest}",
        )
        self._check_registry(target)
        if not _SHA256.fullmatch(digest):
            raise target.error(errors.BadResponseError, f"{digest!r} is not a sha256 digest")
        try:
            answer = await self._request(
                lambda authorization: httpx.Request(
                    "GET",
                    f"{self._policy.scheme_for(ref.registry)}://"
                    f"{requests.endpoint_for(ref.registry)}/v2/{ref.repository}"
                    f"/referrers/{digest}",
                    headers={
                        "Accept": artifacts.OCI_INDEX,
                        "Accept-Encoding": "identity",
                        "User-Agent": auth.USER_AGENT,
                        **({"Authorization": authorization} if authorization else {}),
                    },
                ),
                target=target,
                credential=credential,
                kind="manifest",
                limit=self._max_manifest_bytes,
            )
        except errors.NotFoundError:
            fallback = dataclasses.replace(
                ref, tag=digest.replace(":", "-"), tag_explicit=True, digest=None
            )
            fallback_target = Target(
                registry=ref.registry,
                repository=ref.repository,
                subject=f"referrers tag {fallback.canonical}",
            )
            try:
                answer = await self._request(
                    lambda authorization: requests.build_manifest_request(
                        self._policy, fallback, authorization=authorization
                    ),
                    target=fallback_target,
                    credential=credential,
                    kind="manifest",
                    limit=self._max_manifest_bytes,
                )
            except errors.NotFoundError:
                return {"schemaVersion": 2, "mediaType": artifacts.OCI_INDEX, "manifests": []}
            self._verify(answer, expected=None, target=fallback_target)
            return responses.json_object(answer.body, target=fallback_target)
        return responses.json_object(answer.body, target=target)

    async def get_blob(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        max_bytes: int,
        credential: types.Credential | None = None,
    ) -> bytes:
        """The bytes of blob ``digest`` in ``ref``'s repository (following a redirect to blob
        storage), at most ``max_bytes`` (more: :class:`errors.ManifestTooLargeError`,
        Content-Length checked before reading), verified to hash to ``digest``. For small
        blobs whose exact bytes matter (a signature's payload); sent as :meth:`get_config`
        sends its request, counted as kind ``blob``. Raises only :class:`errors.RegistryError`
        subclasses."""
        target = Target(
            registry=ref.registry,
            repository=ref.repository,
            subject=f"blob {ref.canonical_name}@{digest}",
        )
        self._check_registry(target)
        if not _DIGEST.match(digest):
            raise target.error(errors.BadResponseError, f"{digest!r} is not a sha256/sha512 digest")
        answer = await self._request(
            lambda authorization: requests.build_blob_request(
                self._policy, ref, digest, authorization=authorization
            ),
            target=target,
            credential=credential,
            kind="blob",
            limit=max_bytes,
        )
        self._verify(answer, expected=digest, target=target)
        return answer.body

    # -- the request cycle -------------------------------------------------------------------

    def _check_registry(self, target: Target) -> None:
        try:
            self._policy.check(target.registry, purpose="registry")
        except errors.HostNotAllowedError as e:
            raise errors.HostNotAllowedError(
                e.message, registry=target.registry, repository=target.repository
            ) from e

    @staticmethod
    def _verify(answer: Answer, *, expected: str | None, target: Target) -> str:
        return responses.verify_digest(
            answer.body,
            claimed=answer.headers.get("docker-content-digest"),
            expected=expected,
            subject=target.subject,
            registry=target.registry,
            repository=target.repository,
        )

    async def _request(
        self,
        build: Callable[[str | None], httpx.Request],
        *,
        target: Target,
        credential: types.Credential | None,
        kind: RequestKind,
        limit: int,
    ) -> Answer:
        """Send ``build(authorization)``: up front with what the endpoint's known challenge
        asks for (learnt by the API version check when unknown yet), again after a 401 with
        what its challenge asks for; map the final status."""
        url = build(None).url
        await self._pinger.once(url, target=target)
        try:
            plan = self._auth.plan(url=url, repository=target.repository, credential=credential)
        except errors.RegistryError as e:
            raise responses.in_context(e, target) from e
        sent = await self._tokens.authorization(plan, target=target)
        # A token this request waited for counts as fetched for it, whether its own fetch or
        # one in flight that it joined: either was issued after this request found none.
        fresh = plan.key if isinstance(plan, auth.TokenFetch) else None
        answer = await self._sender.exchange(
            build(sent), purpose="registry endpoint", target=target, kind=kind, limit=limit
        )
        if answer.status == 401 and not answer.redirected:
            try:
                plan = self._auth.on_challenge(
                    url=url,
                    repository=target.repository,
                    credential=credential,
                    www_authenticate=answer.headers.get_list("www-authenticate"),
                    registry=target.registry,
                    refused=sent,
                )
            except errors.RegistryError as e:
                raise responses.in_context(e, target) from e
            if isinstance(plan, auth.TokenFetch) and plan.key == fresh:
                # The token refused was fetched just now for this very realm, service, scope
                # and credential: another one would be refused alike (the Bearer analogue of
                # the Basic value that is not sent twice below). The 401 stands.
                plan = None
            retry = await self._tokens.authorization(plan, target=target)
            if retry is not None and retry != sent:
                answer = await self._sender.exchange(
                    build(retry), purpose="registry endpoint", target=target, kind=kind, limit=limit
                )
        if not 200 <= answer.status < 300:
            raise responses.status_error(
                answer, target=target, credential=credential, now=self._clock()
            )
        return answer
