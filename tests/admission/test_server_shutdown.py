"""Stopping gracefully: when kopf stops (SIGTERM sets its stop flag, then it cancels its root
tasks, the webhook server among them), ``/readyz`` answers 503 first, new connections are
still served through the drain window, then the port closes and the in-flight review
finishes; all within ``shutdown_seconds``.

kopf runs for real here (``kopf.spawn_tasks`` and ``kopf.run_tasks`` with a stop flag, as
``kopf.operator`` does on a signal), with kitpin's server on real sockets; there is no
apiserver (kopf's login waits forever, the resources are declared), and a fast path that
holds one review until the test lets it go stands for a slow registry. The server has
stopped when its probe port closes (its last step); kopf itself then still waits up to 5 s
for tasks it considers hung (here: its API scans, waiting for a login that never comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
import pytest
from kopf._cogs.structs import references

from controller.admission import server
from tests.admission import kopf_running, reviews, serving

DRAIN = 0.8
SHUTDOWN = 4.0


@dataclass
class Slow:
    """A fast path that holds reviews of a Pod named ``slow`` until ``release`` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    answered: list[str] = field(default_factory=list)

    async def __call__(
        self, data: Mapping[str, Any], hook: str | None, indexes: Mapping[str, Any]
    ) -> dict[str, Any]:
        name = data["request"]["object"]["metadata"]["name"]
        if name == "slow":
            self.held.set()
            await self.release.wait()
        self.answered.append(name)
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": data["request"]["uid"], "allowed": True}}  # fmt: skip


@dataclass
class Running:
    server: server.WebhookServer
    url: str
    probes: str
    stop: asyncio.Event
    operator: asyncio.Task[None]


@contextlib.asynccontextmanager
async def operator(fast: Slow) -> AsyncIterator[Running]:
    """kopf with kitpin's server, stopped through kopf's stop flag."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def never(**_: Any) -> None:  # no apiserver
        await asyncio.Event().wait()

    srv = server.WebhookServer(
        addr="127.0.0.1",
        insecure=True,
        fast_review=fast,
        probe_port=0,
        drain_seconds=DRAIN,
        shutdown_seconds=SHUTDOWN,
    )
    settings = kopf.OperatorSettings()
    settings.admission.server = srv
    settings.posting.enabled = False
    insights = references.Insights()
    insights.webhook_resources.add(kopf_running.POD)
    insights.ready_resources.set()
    stop = asyncio.Event()
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings,
        insights=insights,
        clusterwide=True,
        standalone=True,
        stop_flag=stop,
    )
    run = asyncio.create_task(kopf.run_tasks(tasks, ignored=existing))
    deadline = time.monotonic() + 10
    while not srv.ready:
        assert time.monotonic() < deadline, "kitpin's server did not start"
        assert not run.done(), run
        await asyncio.sleep(0.02)
    try:
        yield Running(
            server=srv,
            url=str(srv.url),
            probes=f"http://127.0.0.1:{srv.probe_port}",
            stop=stop,
            operator=run,
        )
    finally:
        stop.set()
        fast.release.set()
        await asyncio.wait_for(run, timeout=SHUTDOWN + 10)


async def _until(predicate: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _closed(probes: str) -> bool:
    """Whether the probe port has closed (the server's last step when it stops)."""
    try:
        await serving.get(f"{probes}/healthz")
    except aiohttp.ClientConnectorError:
        return True
    return False


async def _post(url: str, name: str) -> tuple[int, str, str | None]:
    """A review of a Pod ``name`` on a new connection: (status, body, Connection header)."""
    connector = aiohttp.TCPConnector(force_close=False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{url}/pin-pods", json=reviews.review(reviews.pod(name))) as resp,
    ):
        return resp.status, await resp.text(), resp.headers.get("Connection")


async def test_sigterm_goes_unready_drains_and_finishes_the_review_in_flight() -> None:
    fast = Slow()
    async with operator(fast) as running:
        assert await serving.get(f"{running.probes}/readyz") == (200, "ok\n")
        in_flight = asyncio.create_task(_post(running.url, "slow"))
        await asyncio.wait_for(fast.held.wait(), timeout=5)

        stopped_at = time.monotonic()
        running.stop.set()  # what kopf's signal handler does on SIGTERM

        # Unready at once: load balancers and endpoints stop sending.
        async def unready() -> bool:
            return await serving.get(f"{running.probes}/readyz") == (503, "stopping\n")

        await _until(unready, "/readyz to answer 503")
        assert time.monotonic() - stopped_at < DRAIN

        # Still serving new connections through the drain window, each closed after.
        status, _, connection = await _post(running.url, "during-drain")
        assert (status, connection) == (200, "close")
        assert time.monotonic() - stopped_at < DRAIN

        # After the drain the port stops listening; the review in flight is still held.
        async def refused() -> bool:
            try:
                await _post(running.url, "polling")
            except aiohttp.ClientConnectorError:
                return True
            return False

        await _until(refused, "the webhook port to stop listening", timeout=DRAIN + 2)
        assert time.monotonic() - stopped_at >= DRAIN
        assert not in_flight.done()
        assert not running.operator.done()
        assert await serving.get(f"{running.probes}/healthz") == (200, "ok\n")  # still alive

        # The review finishes and is answered; then the server stops.
        fast.release.set()
        status, text, _ = await asyncio.wait_for(in_flight, timeout=5)
        assert status == 200 and '"allowed":true' in text
        await _until(lambda: _closed(running.probes), "the server to stop", timeout=SHUTDOWN)
        assert time.monotonic() - stopped_at < SHUTDOWN
        await asyncio.wait_for(running.operator, timeout=10)
    # In order: the one sent during the drain, the polls answered while it lasted, the slow one.
    assert fast.answered[0] == "during-drain" and fast.answered[-1] == "slow"
    assert set(fast.answered[1:-1]) <= {"polling"}


async def test_a_review_that_never_ends_does_not_hold_the_stop_past_its_bound() -> None:
    fast = Slow()
    async with operator(fast) as running:
        in_flight = asyncio.create_task(_post(running.url, "slow"))
        await asyncio.wait_for(fast.held.wait(), timeout=5)
        stopped_at = time.monotonic()
        running.stop.set()
        await _until(lambda: _closed(running.probes), "the server to stop", timeout=SHUTDOWN + 2)
        took = time.monotonic() - stopped_at
        assert SHUTDOWN - 1 < took < SHUTDOWN, took
        with pytest.raises(aiohttp.ClientError):  # cut: the apiserver's failurePolicy decides
            await asyncio.wait_for(in_flight, timeout=5)
        await asyncio.wait_for(running.operator, timeout=10)
    assert fast.answered == []


def test_the_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="drain_seconds <= shutdown_seconds"):
        server.WebhookServer(insecure=True, drain_seconds=5, shutdown_seconds=2)
