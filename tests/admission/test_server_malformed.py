"""Malformed AdmissionReviews get HTTP 400 from kitpin's own server, naming the field, before
the fast path or kopf sees them; what the apiserver sends passes.

Each review is POSTed to the real server (its aiohttp application on a real socket) in front
of kopf's real webhook function and the real fast path, on a route the fast path serves
(``/pin-pods``) and on one only kopf serves (the policy webhook).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kopf
import orjson
import pytest

from bench import reviews as bench_reviews
from controller import metrics
from controller.admission import decide, fastpath, kopfcompat, pinning, server, webhook
from tests.admission import kopf_running, reviews, serving


class Engine:
    """Allows everything, counting what it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def mutate(self, review: pinning.Review) -> pinning.Decision:
        self.calls += 1
        return pinning.Decision(reason="Skipped")

    async def validate(self, review: pinning.Review) -> pinning.Decision:
        self.calls += 1
        return pinning.Decision(reason="Skipped")


class Seen:
    def __init__(self) -> None:
        self.fast = 0
        self.kopf = 0


async def _recorded(seen: Seen, real: Any, data: Any, **kwargs: Any) -> Any:
    seen.kopf += 1
    kwargs.pop("indices", None)
    return await real(data, **kwargs)


@pytest.fixture
async def url_and_seen() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    admission = decide.Admission(Engine(), metrics=metrics.Metrics())  # type: ignore[arg-type]
    registry = kopf.OperatorRegistry()
    webhook.register(registry, admission, resources=webhook.BUILTIN_RESOURCES)
    fast = fastpath.FastPath(admission, webhook.routes(webhook.BUILTIN_RESOURCES))

    async def fast_review(
        data: Mapping[str, Any], hook: str | None, indexes: Mapping[str, Any]
    ) -> Any:
        seen.fast += 1
        return await fast.serve(data, hook, indexes)

    async with kopf_running.webhook_fn(registry) as real:
        # Record kopf's calls; keep its indexes where the fast path looks for them.
        fn = functools.partial(_recorded, seen, real, indices=kopfcompat.indexes(real))
        srv = server.WebhookServer(
            addr="127.0.0.1", insecure=True, fast_review=fast_review, drain_seconds=0
        )
        async with serving.serving(srv, fn) as url:
            yield url, seen


def nested(levels: int) -> dict[str, Any]:
    """An object nesting ``levels`` objects in all (itself included)."""
    inner: dict[str, Any] = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    return inner


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
        return data

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        del target[last]
        return data

    return change


# (what changes in a good review, the field the message names)
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a top-level array": (lambda d: [d], "the body is an array, not an AdmissionReview object"),
    "a top-level string": (lambda d: "review", "the body is a string"),
    "request missing": (_drop("request"), "request: expected an object, got null"),
    "request null": (_set("request", None), "request: expected an object, got null"),
    "request an array": (_set("request", []), "request: expected an object, got an array"),
    "kind not AdmissionReview": (_set("kind", "Pod"), "kind: expected 'AdmissionReview'"),
    "apiVersion wrong": (_set("apiVersion", 1), "apiVersion: expected admission.k8s.io/v1"),
    "uid a number": (_set("request.uid", 5), "request.uid: expected a non-empty string"),
    "uid empty": (_set("request.uid", ""), "request.uid: expected a non-empty string"),
    "uid missing": (_drop("request.uid"), "request.uid: expected a non-empty string, got null"),
    "resource a string": (
        _set("request.resource", "pods"),
        "request.resource: expected an object, got a string",
    ),
    "resource missing": (_drop("request.resource"), "request.resource: expected an object"),
    "resource.version a number": (
        _set("request.resource.version", 1),
        "request.resource.version: expected a string, got a number",
    ),
    "kind a string": (_set("request.kind", "Pod"), "request.kind: expected an object"),
    "requestResource an array": (
        _set("request.requestResource", []),
        "request.requestResource: expected an object, got an array",
    ),
    "subResource an object": (
        _set("request.subResource", {}),
        "request.subResource: expected a string or null, got an object",
    ),
    "namespace a number": (_set("request.namespace", 7), "request.namespace: expected a string"),
    "operation a number": (_set("request.operation", 1), "request.operation: expected one of"),
    "operation unknown": (_set("request.operation", "PATCH"), "got 'PATCH'"),
    "userInfo null": (_set("request.userInfo", None), "request.userInfo: expected an object"),
    "userInfo.groups a string": (
        _set("request.userInfo", {"username": "a", "groups": "admins"}),
        "request.userInfo.groups: expected an array of strings",
    ),
    "object a string": (
        _set("request.object", "pod"),
        "request.object: expected an object or null, got a string",
    ),
    "object and oldObject null": (
        _set("request.object", None),
        "request.object and request.oldObject are both missing",
    ),
    "oldObject an array": (
        _set("request.oldObject", []),
        "request.oldObject: expected an object or null, got an array",
    ),
    "metadata a list": (
        _set("request.object.metadata", []),
        "request.object.metadata: expected an object, got an array",
    ),
    "metadata.name a number": (
        _set("request.object.metadata.name", 3),
        "request.object.metadata.name: expected a string",
    ),
    "a label value a number": (
        _set("request.object.metadata.labels", {"app": 1}),
        "request.object.metadata.labels['app']: expected a string, got a number",
    ),
    "annotations a list": (
        _set("request.object.metadata.annotations", ["a"]),
        "request.object.metadata.annotations: expected an object of strings",
    ),
    "object in another namespace": (
        _set("request.object.metadata.namespace", "team-b"),
        "request.object.metadata.namespace 'team-b' is not request.namespace 'ns'",
    ),
    "dryRun a string": (_set("request.dryRun", "yes"), "request.dryRun: expected a boolean"),
    "options a string": (_set("request.options", "x"), "request.options: expected an object"),
    "an object nested 255 levels deep": (
        lambda d: _set("request.object.spec", nested(server.MAX_DEPTH - 3 + 1))(d),
        f"deeper than {server.MAX_DEPTH} levels",
    ),
    "a label nested 300 levels deep": (
        _set("request.object.metadata.annotations", {"a": [nested(300)]}),
        "request.object.metadata.annotations['a']: expected a string, got an array",
    ),
    "userInfo.extra nested 400 levels deep": (
        _set("request.userInfo.extra", {"x": [nested(400)]}),
        "request.userInfo.extra: expected an object of arrays of strings",
    ),
    "oldObject nested 500 levels deep": (
        _set("request.oldObject", {"metadata": {}, "spec": nested(500)}),
        f"deeper than {server.MAX_DEPTH} levels",
    ),
}

ROUTES = ["pin-pods", "check-clustermodelkitpolicies"]
"""The fast path's route, and one only kopf serves (the policy webhook)."""


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(MALFORMED), ids=str)
async def test_a_malformed_review_is_a_400_naming_the_field(
    url_and_seen: tuple[str, Seen], route: str, case: str
) -> None:
    url, seen = url_and_seen
    change, expected = MALFORMED[case]
    data = change(reviews.review())
    status, text = await serving.post(
        f"{url}/{route}", json.dumps(data).encode()
    )  # orjson stops at 254
    assert status == 400, text
    assert "malformed AdmissionReview" in text and expected in text, text
    assert (seen.fast, seen.kopf) == (0, 0)  # neither path saw it


def test_every_case_is_a_problem_of_its_own() -> None:
    """Each case breaks exactly what it says: its change alone makes a good review bad."""
    assert server.review_problem(reviews.review()) is None
    for case, (change, expected) in MALFORMED.items():
        problem = server.review_problem(change(reviews.review()))
        assert problem is not None and expected in problem, case


@pytest.mark.parametrize("route", ROUTES)
async def test_what_the_apiserver_sends_is_served(
    url_and_seen: tuple[str, Seen], route: str
) -> None:
    url, seen = url_and_seen
    data = bench_reviews.pod_review("p", "ns", ["registry.example/a:1"])
    assert server.review_problem(data) is None
    status, text = await serving.post(
        f"{url}/{route}", json.dumps(data).encode()
    )  # orjson stops at 254
    assert status == 200, text
    answer = orjson.loads(text)
    assert answer["response"]["uid"] == data["request"]["uid"]
    assert seen.fast + seen.kopf >= 1


@pytest.mark.parametrize("route", ROUTES)
async def test_the_deepest_review_allowed_is_served_by_both_paths(
    url_and_seen: tuple[str, Seen], route: str
) -> None:
    """The limit leaves kopf's recursive copy and diff room: a review exactly MAX_DEPTH deep
    is answered, on kopf's path too, not failed with a RecursionError."""
    url, _ = url_and_seen
    data = reviews.review()
    # review(1) > request(2) > object(3) > spec(4) ...: spec nests MAX_DEPTH - 3 objects.
    data["request"]["object"]["spec"] = nested(server.MAX_DEPTH - 3)
    old = copy.deepcopy(data["request"]["object"])
    data["request"].update(operation="UPDATE", oldObject=old)
    assert server.review_problem(data) is None
    status, text = await serving.post(
        f"{url}/{route}", json.dumps(data).encode()
    )  # orjson stops at 254
    assert status == 200, text
    assert orjson.loads(text)["response"]["allowed"] is True


def test_a_body_with_few_brackets_is_not_measured_for_depth() -> None:
    """No document nests deeper than it has brackets: a caller's count at most MAX_DEPTH
    spares the measurement, and a deeper review's count cannot be that low."""
    data = reviews.review()
    body = json.dumps(data).encode()
    brackets = body.count(b"{") + body.count(b"[")
    assert brackets <= server.MAX_DEPTH
    assert server.review_problem(data, brackets=brackets) is None
    data["request"]["object"]["spec"] = nested(server.MAX_DEPTH)
    deep = json.dumps(data).encode()
    count = deep.count(b"{") + deep.count(b"[")
    assert count > server.MAX_DEPTH
    problem = server.review_problem(data, brackets=count)
    assert problem is not None and f"deeper than {server.MAX_DEPTH} levels" in problem
