"""The kopf internals kitpin relies on (controller.admission.kopfcompat), checked against kopf
itself: its real webhook function (from ``kopf.spawn_tasks``), errors and server helpers. If a
kopf upgrade moves one of them, this fails, not production."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller import devcerts
from controller.admission import kopfcompat
from controller.admission.server import WebhookServer
from tests.admission import kopf_running
from tests.admission.reviews import review


def registry_with_an_index() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.index("namespaces", id="some_index", registry=registry)
    def some_index(name: str, **_: Any) -> dict[str, str]:
        return {name: name}

    @kopf.on.validate("", "v1", "pods", id="check-pods", registry=registry)
    def check(**_: Any) -> None:
        pass

    return registry


async def test_the_webhook_fn_kopf_hands_a_server_is_a_partial_carrying_its_indexes() -> None:
    async with kopf_running.webhook_fn(registry_with_an_index()) as fn:
        assert isinstance(fn, functools.partial)
        indexes = kopfcompat.indexes(fn)
        assert indexes is not None
        assert indexes is fn.keywords["indices"]
        assert "some_index" in indexes  # by the index's handler id, as handlers get them
        answer = await fn(review(), webhook="check-pods")
        assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_indexes_of_a_function_kopf_did_not_make_is_none() -> None:
    assert kopfcompat.indexes(lambda: None) is None
    assert kopfcompat.indexes(functools.partial(print, sep="")) is None
    assert kopfcompat.indexes(functools.partial(print, indices={})) == {}


async def test_a_resource_without_handlers_raises_unknown_resource_error() -> None:
    assert issubclass(kopfcompat.UnknownResourceError, kopfcompat.WebhookError)
    deployments = {"group": "apps", "version": "v1", "resource": "deployments"}
    async with kopf_running.webhook_fn(registry_with_an_index()) as fn:
        with pytest.raises(kopfcompat.UnknownResourceError):
            await fn(review(resource=deployments), webhook="check-deployments")


async def test_a_malformed_review_raises_webhook_error() -> None:
    async with kopf_running.webhook_fn(registry_with_an_index()) as fn:
        with pytest.raises(kopfcompat.WebhookError):
            await fn(review(userInfo=None), webhook="check-pods")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (review(resource={"group": "x", "version": "v1", "resource": "ys"}), 404),
        (review(userInfo=None), 400),
        (review(), 200),
    ],
)
async def test_kitpins_server_maps_kopfs_errors_to_http(data: dict[str, Any], status: int) -> None:
    server = WebhookServer(addr="127.0.0.1", insecure=True)
    async with kopf_running.webhook_fn(registry_with_an_index()) as fn:

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await server._review(fn, request)

        app = aiohttp.web.Application()
        app.router.add_post("/{id:.*}", serve)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/check-pods", json=data)
            assert resp.status == status


def test_server_helpers() -> None:
    assert kopfcompat.url("https", "::1", 443, "/x") == "https://[::1]/x"
    assert kopfcompat.url("https", "kitpin.example", 8443, "") == "https://kitpin.example:8443"
    assert kopfcompat.url("http", "127.0.0.1", 80, "/p") == "http://127.0.0.1/p"
    assert kopfcompat.accessible_host("0.0.0.0") == "127.0.0.1"
    assert kopfcompat.accessible_host("::") == "::1"
    assert kopfcompat.accessible_host("10.1.2.3") == "10.1.2.3"
    assert kopfcompat.accessible_host(None) == "localhost"
    assert 0 < kopfcompat.free_port() < 65536


def test_ssl_context_as_kopf_builds_it(tmp_path: Path) -> None:
    assert kopfcompat.ssl_context(kopf.WebhookServer(insecure=True)) == (None, None)
    certs = devcerts.write_dev_certificates(tmp_path, hosts=("127.0.0.1",))
    server = kopf.WebhookServer(
        certfile=str(certs.cert_file), pkeyfile=str(certs.key_file), cafile=str(certs.ca_file)
    )
    cadata, context = kopfcompat.ssl_context(server)
    assert cadata == certs.ca_file.read_bytes()
    assert isinstance(context, ssl.SSLContext)
