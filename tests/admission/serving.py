"""kitpin's real webhook server in this process, for the server tests: a throwaway PKI on disk
(:mod:`harness.pki`), the server's generator driven as kopf drives it, and clients.

    pki = Pki.make(tmp_path)
    server = WebhookServer(addr="127.0.0.1", certfile=..., client_ca=pki.client_ca.cert, ...)
    async with serving(server, fn) as url:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from controller.admission.server import WebhookServer
from harness import pki


@dataclass(frozen=True, kw_only=True)
class Pki:
    """Files for one server and its callers: the serving pair (for 127.0.0.1, signed by
    ``server_ca``), the apiserver's client certificate (signed by ``client_ca``) and a
    stranger's (signed by another CA, with the apiserver's name)."""

    server_ca: pki.CertFiles
    serving: pki.CertFiles
    client_ca: pki.CertFiles
    apiserver: pki.CertFiles
    stranger: pki.CertFiles

    @classmethod
    def make(cls, directory: Path, apiserver_name: str = "kube-apiserver") -> Pki:
        server_ca = pki.CA("kitpin-test-serving-ca")
        client_ca = pki.CA("kitpin-test-webhook-client-ca")
        other = pki.CA("kitpin-test-other-ca")
        return cls(
            server_ca=server_ca.write(directory, "server-ca"),
            serving=server_ca.server_cert(dns_names=("localhost",), ips=("127.0.0.1",)).write(
                directory, "serving"
            ),
            client_ca=client_ca.write(directory, "client-ca"),
            apiserver=client_ca.client_cert(apiserver_name).write(directory, "apiserver"),
            stranger=other.client_cert(apiserver_name).write(directory, "stranger"),
        )

    def client_context(self, cert: pki.CertFiles | None = None) -> ssl.SSLContext:
        """A client trusting the serving CA, presenting ``cert`` (none: no certificate)."""
        if cert is None:
            return pki.ssl_context(self.server_ca.cert)
        return pki.ssl_context(self.server_ca.cert, client_cert=cert.cert, client_key=cert.key)


@contextlib.asynccontextmanager
async def serving(server: WebhookServer, fn: Any) -> AsyncIterator[str]:
    """Run ``server`` with kopf's webhook function ``fn`` as kopf does (its generator, in a
    task of its own) and yield the webhook URL; at the end cancel that task, as kopf stops
    it, and wait for the server to stop."""
    configs = server(fn)
    first = await anext(configs)

    async def rest() -> None:
        async for _ in configs:  # certificate reloads
            pass

    task = asyncio.create_task(rest())
    try:
        yield first["url"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def post(
    url: str,
    review: Mapping[str, Any] | bytes,
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    """One review POSTed on a new connection: (status, body)."""
    body = review if isinstance(review, bytes) else aiohttp.JsonPayload(dict(review))
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, data=body) as resp,
    ):
        return resp.status, await resp.text()


async def get(url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    """One GET on a new connection: (status, body)."""
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return resp.status, await resp.text()
