"""The HTTPS server the apiserver calls: kopf's webhook server plus probes and metrics.

kopf's :class:`kopf.WebhookServer` serves ``POST /<handler-id>`` with aiohttp's default body
cap of 1 MiB. An UPDATE review carries the object twice; Kubernetes objects may reach about
1.5 MiB each (etcd's limit), so kitpin accepts bodies up to ``max_body`` (8 MiB). It also
serves, on the same port (so probes prove the webhook port itself answers):

- ``GET /healthz`` — the process serves HTTP;
- ``GET /readyz``  — the handlers are registered and the server is up;
- ``GET /metrics`` — Prometheus exposition of :mod:`controller.metrics`.

kitpin's own webhooks (``/pin-*``, ``/check-*``) are answered by ``fast_review``
(:meth:`controller.admission.fastpath.FastPath.serve`) before kopf's generic admission
machinery; kopf serves everything else (and the same reviews, should the fast path decline
one). What this needs of kopf beyond its public API goes through
:mod:`controller.admission.kopfcompat`.

Certificate files are re-read when they change (cert-manager rotations), like kopf does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp.web
import kopf
import orjson

from controller.admission import kopfcompat

logger = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024

FastReview = Callable[
    [Mapping[str, Any], str | None, Mapping[str, Any]], Awaitable[Mapping[str, object] | None]
]
"""``(review, handler id, kopf's indexes) -> response or None``: answers a review before
kopf's generic admission machinery does; None hands it to kopf."""


class WebhookServer(kopf.WebhookServer):
    """kopf's webhook server with an explicit body cap and probe/metrics routes."""

    def __init__(
        self,
        *,
        metrics_render: Callable[[], bytes] | None = None,
        max_body: int = MAX_BODY,
        fast_review: FastReview | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics_render = metrics_render
        self.fast_review = fast_review
        self.max_body = max_body
        self.ready = False

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def review(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._review(fn, request)

        async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.Response(text="ok\n")

        async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
            if not self.ready:
                return aiohttp.web.Response(status=503, text="starting\n")
            return aiohttp.web.Response(text="ok\n")

        async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
            body = self.metrics_render() if self.metrics_render else b""
            return aiohttp.web.Response(
                body=body, content_type="text/plain", charset="utf-8", headers={}
            )

        while True:
            cadata, context = kopfcompat.ssl_context(self)
            prefix = self.path.rstrip("/") if self.path else ""
            app = aiohttp.web.Application(client_max_size=self.max_body)
            app.add_routes(
                [
                    aiohttp.web.get("/healthz", healthz),
                    aiohttp.web.get("/readyz", readyz),
                    aiohttp.web.get("/metrics", metrics),
                    aiohttp.web.post(f"{prefix}/{{id:.*}}", review),
                ]
            )
            runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            try:
                port = self.port or kopfcompat.free_port()
                site = aiohttp.web.TCPSite(
                    runner, self.addr or None, port, ssl_context=context, reuse_address=True
                )
                await site.start()
                scheme = "http" if context is None else "https"
                host = self.host or kopfcompat.accessible_host(self.addr)
                config: kopf.WebhookClientConfig = {
                    "url": kopfcompat.url(scheme, host, port, self.path or "")
                }
                if cadata is not None:
                    config["caBundle"] = base64.b64encode(cadata).decode("ascii")
                logger.info("serving webhooks at %s", config["url"])
                self.ready = True
                yield config
                await self._wait_for_cert_change()
                logger.info("certificate files changed: restarting the webhook server")
            finally:
                self.ready = False
                await runner.cleanup()

    async def _review(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            # orjson: the review (~6.5 KB as the apiserver sends a Pod) parses in ~19 us
            # instead of ~43 us with json, the largest single cost of a cached review.
            data = orjson.loads(await request.read())
        except ValueError as e:  # orjson.JSONDecodeError is a json.JSONDecodeError
            raise aiohttp.web.HTTPBadRequest(reason=f"not a JSON AdmissionReview: {e}") from e
        webhook = request.match_info.get("id")
        if self.fast_review is not None and isinstance(data, dict):
            # kopf binds its indexes (namespace labels, policies) into the function it hands
            # to webhook servers; the fast path reads the same ones.
            indexes = kopfcompat.indexes(fn)
            if indexes is not None:
                answer = await self.fast_review(data, webhook, indexes)
                if answer is not None:
                    return aiohttp.web.Response(
                        body=orjson.dumps(answer), content_type="application/json"
                    )
        sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(
                data,
                webhook=webhook,
                sslpeer=sslpeer,
                headers=dict(request.headers),
            )
        except kopfcompat.UnknownResourceError as e:
            raise aiohttp.web.HTTPNotFound(reason=str(e) or None) from e
        except kopfcompat.WebhookError as e:
            raise aiohttp.web.HTTPBadRequest(reason=str(e) or None) from e
        return aiohttp.web.Response(body=orjson.dumps(response), content_type="application/json")

    def _cert_mtimes(self) -> tuple[float, ...]:
        files = [f for f in (self.certfile, self.pkeyfile) if f]
        return tuple(os.stat(f).st_mtime if os.path.exists(f) else 0.0 for f in files)

    async def _wait_for_cert_change(self) -> None:
        before = self._cert_mtimes()
        while True:
            await asyncio.sleep(self.file_check_interval)
            if before and self._cert_mtimes() != before:
                return
