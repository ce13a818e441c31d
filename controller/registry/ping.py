"""The API version check, ``GET /v2/`` (the "ping"), before the first request to an endpoint.

Before the first request to an endpoint whose auth challenge is unknown, the client sends the
API version check ``GET /v2/`` once (one in flight per endpoint, however many requests wait
for it), anonymous and not following redirects, to learn the challenge so the real request
carries Basic or a Bearer token from the start (see :mod:`.auth`). The check never fails a
request: whatever it meets (``404``, ``5xx``, a timeout, a refused host), the real request
goes as it would have without it and meets the same problem with its usual message. What it
found is remembered: a challenge or a ``200`` for good, anything else for
:data:`PING_RETRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

import httpx

from controller import errors
from controller.flights import Flights
from controller.registry import auth, requests, responses
from controller.registry.responses import Target
from controller.registry.sender import Sender

__all__ = ["MAX_PING_BYTES", "PING_DEADLINE_SECONDS", "PING_RETRY_SECONDS", "Pinger"]

logger = logging.getLogger(__name__)

PING_RETRY_SECONDS: Final = 300.0
"""How long an API version check (``GET /v2/``) that taught nothing (``404``, ``5xx``, a
redirect, a network error, a ``401`` without a usable challenge) is not repeated."""
PING_DEADLINE_SECONDS: Final = 5.0
"""The API version check as a whole (each of its phases is also bounded by the client's
timeout): a registry that hangs on ``/v2/`` does not hold the requests waiting for it longer."""
MAX_PING_BYTES: Final = 4 * 1024
"""Of the answer to ``GET /v2/`` only the start is read (its body means nothing to kitpin)."""
_MAX_REMEMBERED_ENDPOINTS: Final = 1024


class Pinger:
    """Sends each endpoint's API version check once, through ``sender``, and teaches
    ``authenticator`` the challenge it finds. ``clock``: wall clock for the retry delay."""

    def __init__(
        self, sender: Sender, authenticator: auth.Authenticator, clock: Callable[[], float]
    ) -> None:
        self._sender = sender
        self._auth = authenticator
        self._clock = clock
        self._pinged: dict[str, float] = {}
        """Endpoint key → until when (:attr:`_clock`) its ``/v2/`` need not be asked again."""
        self._pings: Flights[str, None] = Flights()
        """Endpoint key → the API version check in flight."""

    async def aclose(self) -> None:
        """Cancel the API version checks in flight."""
        await self._pings.cancel_all()

    async def once(self, url: httpx.URL, *, target: Target) -> None:
        """The API version check of ``url``'s endpoint, when its challenge is unknown and it
        was not checked (recently): one task per endpoint, joined by every request that comes
        while it runs. Waiting does not cancel it (another request may still want it); it
        never raises."""
        if self._auth.knows(url):
            return
        key = auth.endpoint_key(url)
        until = self._pinged.get(key)
        if until is not None and until > self._clock():
            return
        # The task's end (even its cancellation by aclose) is not the caller's, and the
        # caller's cancellation (its deadline) leaves the task to the others.
        await self._pings.join(
            key, lambda: self._ping(url, key=key, target=target), name=f"kitpin-ping {key}"
        )

    async def _ping(self, url: httpx.URL, *, key: str, target: Target) -> None:
        """Send ``GET /v2/`` and learn from the answer; remember the outcome. Goes through
        :meth:`Sender.send` like every request (host policy and DNS, TLS settings, timeouts,
        ``on_request`` with kind ``ping``) and never follows a redirect."""
        ping = Target(
            registry=target.registry,
            repository=target.repository,
            subject=f"API version check of {key}",
        )
        request = requests.build_ping_request(url)
        try:
            async with asyncio.timeout(PING_DEADLINE_SECONDS):
                response = await self._sender.send(
                    request, purpose="registry endpoint", target=ping, kind="ping"
                )
                try:
                    await responses.read_body(
                        response, limit=MAX_PING_BYTES, strict=False, target=ping
                    )
                finally:
                    await response.aclose()
        except TimeoutError:
            logger.debug(
                "%s took over %.0f s; the request goes without it",
                ping.subject,
                PING_DEADLINE_SECONDS,
            )
            self._remember(key, settled=False)
            return
        except errors.RegistryError as e:
            logger.debug("%s failed, the request goes without it: %s", ping.subject, e)
            self._remember(key, settled=False)
            return
        except Exception:  # the check must never fail a request; log what it hit
            logger.debug("%s failed, the request goes without it", ping.subject, exc_info=True)
            self._remember(key, settled=False)
            return
        status = response.status_code
        if status == 401:
            learnt = self._auth.learn(
                url=url, www_authenticate=response.headers.get_list("www-authenticate")
            )
        else:
            learnt = 200 <= status < 300
        logger.debug("%s: %s%s", ping.subject, status, "" if learnt else " (nothing learnt)")
        self._remember(key, settled=learnt)

    def _remember(self, key: str, *, settled: bool) -> None:
        if len(self._pinged) >= _MAX_REMEMBERED_ENDPOINTS and key not in self._pinged:
            self._pinged.clear()
        self._pinged[key] = math.inf if settled else self._clock() + PING_RETRY_SECONDS
