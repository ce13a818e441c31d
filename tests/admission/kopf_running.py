"""kopf's real webhook function, as kopf hands it to a webhook server, without an apiserver.

``kopf.spawn_tasks`` starts an operator's tasks; its admission task hands
``settings.admission.server`` the webhook function once the resources are known. Here the
server only captures that function, the resources are declared instead of discovered, and
kopf's login waits forever, so nothing talks to an apiserver. Tests then call the function
as kitpin's server does: ``await fn(review, webhook=<handler id>)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import kopf
from kopf._cogs.structs import references

POD = references.Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)


class _Capture:
    """A webhook server that serves nothing: it keeps the function kopf hands it."""

    def __init__(self) -> None:
        self.fn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        self.fn.set_result(fn)
        yield {"url": "https://kitpin.invalid"}
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def webhook_fn(
    registry: kopf.OperatorRegistry, resources: Iterable[references.Resource] = (POD,)
) -> AsyncIterator[Any]:
    """kopf's webhook function for ``registry``, serving ``resources``."""

    @kopf.on.login(registry=registry)
    async def never(**_: Any) -> None:  # no apiserver: whatever needs one waits
        await asyncio.Event().wait()

    capture = _Capture()
    settings = kopf.OperatorSettings()
    settings.admission.server = capture
    settings.posting.enabled = False
    insights = references.Insights()
    insights.webhook_resources.update(resources)
    insights.ready_resources.set()
    tasks = await kopf.spawn_tasks(
        registry=registry, settings=settings, insights=insights, clusterwide=True, standalone=True
    )
    try:
        yield await asyncio.wait_for(capture.fn, timeout=10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
