"""Fetching bearer tokens, single-flight: the I/O half of the token flow whose planning is
:mod:`.auth` (which builds the token requests and caches the tokens).

Token requests are single-flight: one in flight per token-cache key (realm, service,
scope, credential identity, :class:`~controller.registry.auth.TokenKey`), so concurrent first
requests for one repository (tags ``v1`` and ``v2`` resolved at the same time) cost one token
request. Every request waiting for it gets the token, or the failure mapped into its own
context (subject, registry, repository, credential source); a failure is not remembered once
the fetch is over. A caller leaving (its deadline) leaves the fetch to the others; the fetch
as a whole is bounded by :data:`TOKEN_DEADLINE_SECONDS`. Different credentials make different
keys: a token fetched with one credential never serves another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx

from controller import errors
from controller.flights import Flights
from controller.registry import auth, hosts, responses
from controller.registry.responses import Answer, Target
from controller.registry.sender import Sender

__all__ = ["MAX_TOKEN_BYTES", "TOKEN_DEADLINE_SECONDS", "TokenFetcher"]

logger = logging.getLogger(__name__)

MAX_TOKEN_BYTES: Final = 1024 * 1024
"""Token responses carry a JWT or two; anything bigger is not a token."""
TOKEN_DEADLINE_SECONDS: Final = 10.0
"""A token request as a whole (with its fallback and redirects; each phase is also bounded by
the client's timeout). The requests that wait for it leave at their own deadlines, but it
runs on for the others, and later requests for the same token join it: a realm that hangs
or trickles its answer does not hold them longer."""


@dataclass(frozen=True, kw_only=True)
class _SendFailed:
    """A token request that got no answer to read (transport, host policy, redirect, size):
    ``error`` as raised for ``origin``, the request that started the fetch."""

    error: errors.RegistryError
    origin: Target


@dataclass(frozen=True, kw_only=True)
class _NoToken:
    """A token endpoint's success without a usable token (no registry fields yet)."""

    error: errors.BadResponseError


_TokenOutcome = str | Answer | _SendFailed | _NoToken
"""What one token fetch came to, for each request waiting for it to take in its own context:
the ``Authorization`` value (the token is cached), the realm's answer when it was no success,
or a failure."""


class TokenFetcher:
    """Turns ``authenticator``'s plans into ``Authorization`` values, sending the token
    requests through ``sender``. ``clock``: wall clock for ``Retry-After`` dates."""

    def __init__(
        self, sender: Sender, authenticator: auth.Authenticator, clock: Callable[[], float]
    ) -> None:
        self._sender = sender
        self._auth = authenticator
        self._clock = clock
        self._fetches: Flights[auth.TokenKey, _TokenOutcome] = Flights()
        """Token-cache key → the token request in flight for it."""

    async def aclose(self) -> None:
        """Cancel the token requests in flight (requests waiting for a token get a
        :class:`errors.RegistryError`)."""
        await self._fetches.cancel_all()

    async def authorization(self, plan: auth.Plan, *, target: Target) -> str | None:
        """The ``Authorization`` value for ``plan``, fetching a token if it says so: one token
        request in flight per token-cache key, joined by every request that needs the same
        token while it runs. Waiting does not cancel it (another request may still want it);
        its outcome is mapped into each waiter's own context."""
        if plan is None or isinstance(plan, str):
            return plan
        fetch = plan
        if self._fetches.in_flight(fetch.key):
            logger.debug("%s: joins the token request in flight", target.subject)
        # The caller's cancellation (its deadline) leaves the fetch to the others, and the
        # fetch's cancellation (aclose) is not the caller's.
        task = await self._fetches.join(
            fetch.key,
            lambda: self._fetch(fetch, target=target),
            name=f"kitpin-token {hosts.host_port_of(fetch.request.url)}",
        )
        if task.cancelled():
            raise target.error(
                errors.RegistryError,
                f"the token request to {hosts.host_port_of(fetch.request.url)} was abandoned "
                "because the registry client is closing (shutdown); try again",
            )
        return self._authorization(task.result(), fetch=fetch, target=target)

    async def _fetch(self, fetch: auth.TokenFetch, *, target: Target) -> _TokenOutcome:
        """Send ``fetch``'s token request (and its fallback); cache the token issued. Errors
        are returned, not raised: every waiter maps them into its own context
        (:meth:`_authorization`). ``target`` is the request that started the fetch.
        At most :data:`TOKEN_DEADLINE_SECONDS`."""
        try:
            async with asyncio.timeout(TOKEN_DEADLINE_SECONDS):
                answer = await self._exchange(fetch.request, target=target)
                if answer.status in (404, 405) and fetch.fallback is not None:
                    logger.debug(
                        "token realm of %s refused the refresh-token POST; GET", target.registry
                    )
                    answer = await self._exchange(fetch.fallback, target=target)
        except errors.RegistryError as e:
            return _SendFailed(error=e, origin=target)
        except TimeoutError:
            timeout = target.error(
                errors.RegistryTimeoutError,
                f"the token service {hosts.host_port_of(fetch.request.url)} of "
                f"{target.registry} gave no token within {TOKEN_DEADLINE_SECONDS:.0f} s; it "
                "is slow or unreachable, try again",
            )
            return _SendFailed(error=timeout, origin=target)
        if not 200 <= answer.status < 300:
            return answer
        try:
            return self._auth.token_received(fetch, answer.body)
        except errors.BadResponseError as e:
            return _NoToken(error=e)

    async def _exchange(self, request: httpx.Request, *, target: Target) -> Answer:
        return await self._sender.exchange(
            request, purpose="token realm", target=target, kind="token", limit=MAX_TOKEN_BYTES
        )

    def _authorization(
        self, outcome: _TokenOutcome, *, fetch: auth.TokenFetch, target: Target
    ) -> str:
        """The ``Authorization`` value from a token fetch's outcome, or its failure as an
        error about ``target``, naming ``fetch``'s credential (the waiter's own: the same
        credential identity may come from several sources)."""
        if isinstance(outcome, str):
            return outcome
        if isinstance(outcome, _SendFailed):
            raise responses.moved(outcome.error, outcome.origin, target) from outcome.error
        realm = hosts.host_port_of(fetch.request.url)
        if isinstance(outcome, _NoToken):
            raise errors.BadResponseError(
                f"{target.registry}: token service {realm}: {outcome.error.message}",
                registry=target.registry,
                repository=target.repository,
            ) from outcome.error
        answer = outcome
        if answer.status == 401:
            raise target.error(
                errors.UnauthorizedError,
                f"the token service {realm} of {target.registry} rejected "
                f"{fetch.credential_description} (401); check the credentials for "
                f"{target.registry}, or add a pull secret for it to the namespace",
            )
        if answer.status == 403:
            raise target.error(
                errors.ForbiddenError,
                f"the token service {realm} of {target.registry} refused a token for "
                f"{target.repository} to {fetch.credential_description} (403); grant that "
                f"credential pull access to {target.repository}, or use one that has it",
            )
        raise responses.status_error(
            answer,
            target=Target(
                registry=target.registry,
                repository=target.repository,
                subject=f"token for {target.repository} from {realm}",
            ),
            credential=None,
            now=self._clock(),
        )
