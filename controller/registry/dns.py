"""DNS answers through the host policy: a name that passes
:meth:`~controller.registry.hosts.HostPolicy.check` must also resolve only to addresses it
allows (a name pointing at the metadata service is as bad as the address).

:class:`CheckedResolver` checks a name's answers twice, with the one lookup function it is
given, and the same check (:meth:`CheckedResolver.resolve`) both times:

- before a request is sent (:meth:`CheckedResolver.check`): a name that does not resolve, or
  resolves into a denied network, fails the request with its own message before anything is
  sent. A name whose answers passed is not looked up again for :data:`DNS_OK_SECONDS`.
- when a connection is made (:meth:`CheckedResolver.for_connection`, the ``resolve`` of
  :class:`~controller.registry.transport.AiohttpTransport`, its only DNS): the transport dials
  only addresses that were checked, so a name that passed the first check cannot be
  re-pointed (DNS rebinding) when the connection is made. The purpose the policy names when it
  refuses one is the sending request's, set around the send by :func:`sending`.

IP-literal hosts are judged by the host policy as written and not looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Final

import httpx

from controller import errors
from controller.registry import hosts
from controller.registry.responses import Target
from controller.registry.transport import Resolve

__all__ = ["DNS_OK_SECONDS", "CheckedResolver", "Resolve", "sending", "system_resolve"]

DNS_OK_SECONDS: Final = 30.0
"""How long a host whose DNS answers passed the host policy is not looked up again."""
_MAX_REMEMBERED_HOSTS: Final = 1024

_SENDING: Final = contextvars.ContextVar[hosts.Purpose](
    "kitpin_registry_sending", default="registry endpoint"
)
"""Why the request being sent contacts its host: the purpose the host policy names when it
refuses an address a connection resolves to."""


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, from the system resolver (off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@contextlib.contextmanager
def sending(purpose: hosts.Purpose) -> Iterator[None]:
    """Within: the connections made are for ``purpose`` (:meth:`CheckedResolver.for_connection`
    names it when the host policy refuses an address)."""
    token = _SENDING.set(purpose)
    try:
        yield
    finally:
        _SENDING.reset(token)


class CheckedResolver:
    """``resolve``'s answers, refused by ``policy`` when one lies in a denied network."""

    def __init__(self, policy: hosts.HostPolicy, resolve: Resolve) -> None:
        self._policy = policy
        self._resolve = resolve
        self._ok: dict[str, float] = {}
        """Host → until when (:func:`time.monotonic`) its answers need not be checked again."""

    async def resolve(self, host: str, port: int, *, purpose: hosts.Purpose) -> Sequence[str]:
        """The addresses ``host`` resolves to, all allowed by the host policy (else
        :class:`errors.HostNotAllowedError`); ``OSError`` when the name does not resolve."""
        addresses = await self._resolve(host, port)
        self._policy.check_resolved(hosts.join_host_port(host, port), addresses, purpose=purpose)
        return addresses

    async def check(self, url: httpx.URL, *, purpose: hosts.Purpose, target: Target) -> None:
        """Refuse ``url``'s host, before sending, when its name does not resolve
        (:class:`errors.UnreachableError`) or resolves into a denied network."""
        host = hosts.host_of(url)
        if hosts.is_ip(host):
            return
        now = time.monotonic()
        ok_until = self._ok.get(host)
        if ok_until is not None and ok_until > now:
            return
        try:
            addresses = await self.resolve(host, hosts.port_of(url), purpose=purpose)
        except OSError as e:
            raise target.error(
                errors.UnreachableError,
                f"cannot resolve {host} ({e.strerror or e}); check the registry name and the "
                "cluster's DNS",
            ) from e
        if not addresses:
            raise target.error(
                errors.UnreachableError,
                f"{host} resolves to no address; check the registry name",
            )
        if len(self._ok) > _MAX_REMEMBERED_HOSTS:
            self._ok.clear()
        self._ok[host] = now + DNS_OK_SECONDS

    async def for_connection(self, host: str, port: int) -> Sequence[str]:
        """The addresses a new connection to ``host`` may go to: :meth:`resolve` for the
        purpose of the request being sent (:func:`sending`). The
        :class:`errors.HostNotAllowedError` reaches the sender through the transport."""
        return await self.resolve(host, port, purpose=_SENDING.get())
