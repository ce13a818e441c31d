"""Any request body posted to kitpin's webhook port: the real server
(:class:`controller.admission.server.WebhookServer`, started as kopf starts it), with the fast
path and kopf's own admission machinery behind it and the real engine (a fake resolver at its
seam, digests of the real shape). Whatever a client sends, the answer is HTTP 200 (an
AdmissionReview response for the request's uid), 400 (a malformed review) or 404 (a webhook
that does not exist): never a 500, never a crash, never an engine failure inside a 200, and
the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
import pytest
from fuzz_helpers import documents, fuzz, workloads
from hypothesis import event
from hypothesis import strategies as st
from kopf._cogs.structs import references

from controller import metrics, sites
from controller.admission import decide, fastpath, pinning, webhook
from controller.admission.server import WebhookServer
from tests.admission import kopf_running
from tests.admission.pinning_fakes import FakeResolver

RESOURCES = tuple(
    references.Resource(
        group=r.group, version=r.version or "v1", plural=r.plural or "", namespaced=True
    )
    for r in webhook.BUILTIN_RESOURCES
    if r.subresource is None
)
HOOKS = sorted(webhook.routes(webhook.BUILTIN_RESOURCES))
DEADLINE = 30.0
"""Seconds one request may take before the property fails (a hang is a finding too)."""


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    url: str
    session: aiohttp.ClientSession

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async def send() -> tuple[int, bytes]:
            async with asyncio.timeout(DEADLINE):
                async with self.session.post(
                    self.url.rstrip("/") + "/" + path,
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    return response.status, await response.read()

        return self.loop.run_until_complete(send())

    def get(self, path: str) -> int:
        async def send() -> int:
            async with asyncio.timeout(DEADLINE):
                async with self.session.get(self.url.rstrip("/") + path) as response:
                    return response.status

        return self.loop.run_until_complete(send())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One server for every example (starting kopf per example would dominate the run)."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()

    async def start() -> Served:
        engine = pinning.Engine(FakeResolver())
        admission = decide.Admission(engine, metrics=metrics.Metrics())
        registry = kopf.OperatorRegistry()
        webhook.register(registry, admission, resources=webhook.BUILTIN_RESOURCES)
        fast = fastpath.FastPath(admission, webhook.routes(webhook.BUILTIN_RESOURCES))
        fn = await stack.enter_async_context(kopf_running.webhook_fn(registry, RESOURCES))
        server = WebhookServer(addr="127.0.0.1", insecure=True, fast_review=fast.serve)
        serving = server(fn)
        config = await anext(serving)
        stack.push_async_callback(serving.aclose)
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        return Served(loop=loop, url=config["url"], session=session)

    try:
        yield loop.run_until_complete(start())
    finally:
        loop.run_until_complete(stack.aclose())
        # What asyncio.run does at its end: kopf leaves tasks of its own behind.
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


# ---------------------------------------------------------------------------------------
# Reviews: the apiserver's shape, then a field or two of it wrong

ROUTES = st.sampled_from(
    [
        ("pods", "v1", "Pod"), ("deployments", "apps/v1", "Deployment"),
        ("replicasets", "apps/v1", "ReplicaSet"), ("jobs", "batch/v1", "Job"),
        ("cronjobs", "batch/v1", "CronJob"), ("replicationcontrollers", "v1", "Pod"),
    ]
)  # fmt: skip
"""(plural, apiVersion, kind): the resources kitpin's webhooks admit (and one mismatch)."""
BROKEN = st.sampled_from(
    [
        "apiVersion", "kind", "request", "request.uid", "request.kind", "request.kind.group",
        "request.resource", "request.resource.resource", "request.operation", "request.userInfo",
        "request.userInfo.groups", "request.object", "request.object.metadata",
        "request.object.metadata.name", "request.object.metadata.namespace",
        "request.object.metadata.labels", "request.object.metadata.annotations",
        "request.object.spec", "request.oldObject", "request.namespace", "request.dryRun",
        "request.subResource", "request.options", "request.requestKind",
    ]
)  # fmt: skip
"""Every field a review has, any of which a hand-written review gets wrong."""


@st.composite
def reviews(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(URL path, review) as the apiserver sends it, then maybe a few fields replaced by
    any JSON or removed."""
    plural, api_version, kind = draw(ROUTES)
    group, _, version = api_version.rpartition("/")
    namespace = draw(st.sampled_from(["ml", "team-b", "kube-system"]))
    obj = draw(workloads(st.just((api_version, kind))))
    obj["metadata"]["namespace"] = namespace
    if draw(st.booleans()):
        obj["metadata"]["annotations"] = {"kitpin.dev/pinned": draw(st.text(max_size=30))}
    operation = draw(st.sampled_from(["CREATE", "UPDATE"]))
    request: dict[str, Any] = {
        "uid": str(draw(st.uuids())),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": plural},
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
        "dryRun": draw(st.booleans()),
    }
    if operation == "UPDATE":
        request["oldObject"] = draw(workloads(st.just((api_version, kind))))
        request["oldObject"]["metadata"]["namespace"] = namespace
    review: dict[str, Any] = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }
    for field in draw(st.lists(BROKEN, max_size=2, unique=True)):
        *parents, last = field.split(".")
        node: Any = review
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if draw(st.booleans()):
                node.pop(last, None)
            else:
                node[last] = draw(documents(leaves=4))
    hook = draw(st.sampled_from(["pin", "check"])) + "-" + plural
    return hook, review


@st.composite
def posts(draw: st.DrawFn) -> tuple[str, bytes]:
    """(URL path, body): mostly reviews, sometimes any JSON or not JSON at all."""
    choice = draw(st.integers(0, 9))
    if choice < 6:
        hook, review = draw(reviews())
        return hook, json.dumps(review).encode()
    path = draw(st.sampled_from(HOOKS) | st.sampled_from(["", "unknown", "pin-", "a/b"]))
    if choice == 6:
        return path, json.dumps(draw(documents(leaves=30))).encode()
    if choice == 7:
        return path, draw(st.binary(max_size=64))
    if choice == 8:
        hook, review = draw(reviews())
        return hook, json.dumps(review).encode()[: -draw(st.integers(1, 20))]
    depth = draw(st.integers(1, 3000))
    if draw(st.booleans()):
        return path, b"[" * depth + b"]" * depth
    hook, review = draw(reviews())
    deep: Any = "x"
    for _ in range(depth):
        deep = {"a": deep}
    if isinstance(review.get("request"), dict) and isinstance(
        review["request"].get("object"), dict
    ):
        review["request"]["object"]["spec"] = deep  # where kopf's copy and diff recurse
    try:
        return hook, json.dumps(review).encode()
    except RecursionError:
        return hook, b"[" * depth + b"]" * depth


@fuzz(examples=60, post=posts())
def test_any_body_is_answered_200_400_or_404_never_500(
    served: Served, post: tuple[str, bytes]
) -> None:
    path, body = post
    status, answer = served.post(path, body)
    event(f"HTTP {status}")
    assert status in (200, 400, 404), (status, answer[:300])
    if status != 200:
        return
    response = json.loads(answer)["response"]
    request = json.loads(body)["request"]  # answered: it was a review, with a uid
    assert isinstance(request.get("uid"), str) and request["uid"]
    assert response["uid"] == request["uid"]
    assert isinstance(response["allowed"], bool)
    # The fake resolver never fails: a 500 inside the answer is an exception in kitpin.
    assert response.get("status", {}).get("code") != 500, response
    patch = response.get("patch")
    if patch is not None:
        assert response["patchType"] == "JSONPatch"
    event("pinned" if patch else "allowed" if response["allowed"] else "denied")


def test_the_server_still_serves_after_the_fuzzing(served: Served) -> None:
    assert served.get("/healthz") == 200
    assert served.get("/readyz") == 200


def test_a_valid_review_is_pinned(served: Served) -> None:
    """The property's server really admits: a well-formed review gets its pin."""
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {
            "initContainers": [
                {
                    "name": "kitops-init",
                    "image": "ghcr.io/kitops-ml/kitops-init:v1",
                    "env": [{"name": "MODELKIT_REF", "value": "reg.example.com/ml/llama:v1"}],
                }
            ],
            "containers": [{"name": "main", "image": "x/serve:1"}],
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "ml",
            "userInfo": {"username": "alice"},
            "object": obj,
        },
    }
    assert sites.find(obj).sites
    status, answer = served.post("pin-pods", json.dumps(review).encode())
    assert status == 200
    response = json.loads(answer)["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert "patch" in response
