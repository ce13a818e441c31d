"""admission.server.WebhookServer's review endpoint: JSON in, JSON out, the fast path first."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.admission.server import WebhookServer
from tests.admission import reviews

REVIEW = reviews.review({"metadata": {"name": "p", "namespace": "ns", "labels": {"é": "ü"}}})


class Calls:
    def __init__(self) -> None:
        self.fast: list[tuple[Mapping[str, Any], str | None]] = []
        self.kopf: list[Mapping[str, Any]] = []


async def _kopf_fn(calls: Calls, data: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    calls.kopf.append(data)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
        "uid": data["request"]["uid"], "allowed": True, "warnings": ["from kopf"]}}  # fmt: skip


def _client(calls: Calls, *, fast_answers: bool) -> TestClient[Any, Any]:
    async def fast(
        data: Mapping[str, Any], webhook: str | None, indexes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        calls.fast.append((data, webhook))
        if not fast_answers:
            return None
        return {"response": {"uid": data["request"]["uid"], "allowed": True, "note": "fast"}}

    server = WebhookServer(addr="127.0.0.1", fast_review=fast, insecure=True)
    # kopf hands its webhook servers a partial with the indexes bound, as here.
    fn = functools.partial(_kopf_fn, calls, indices={})
    return TestClient(TestServer(server.webhook_app(fn)))


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    yield Calls()


async def test_fast_path_answers_kitpins_review(calls: Calls) -> None:
    async with _client(calls, fast_answers=True) as client:
        resp = await client.post("/pin-pods", data=json.dumps(REVIEW).encode())
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = json.loads(await resp.read())
    assert body == {"response": {"uid": "u-1", "allowed": True, "note": "fast"}}
    assert calls.fast == [(REVIEW, "pin-pods")]  # parsed exactly, non-ASCII included
    assert calls.kopf == []


async def test_kopf_serves_what_the_fast_path_declines(calls: Calls) -> None:
    async with _client(calls, fast_answers=False) as client:
        resp = await client.post("/other", data=json.dumps(REVIEW).encode())
        assert resp.status == 200
        body = json.loads(await resp.read())
    assert body["response"] == {"uid": "u-1", "allowed": True, "warnings": ["from kopf"]}
    assert calls.kopf == [REVIEW]


@pytest.mark.parametrize("payload", [b"", b"{not json", b'{"a": 1', b"\xff\xfe"])
async def test_a_body_that_is_not_json_is_a_400_naming_the_problem(
    calls: Calls, payload: bytes
) -> None:
    async with _client(calls, fast_answers=True) as client:
        resp = await client.post("/pin-pods", data=payload)
        assert resp.status == 400
        assert "not a JSON AdmissionReview" in (resp.reason or "")
    assert calls.fast == [] and calls.kopf == []
