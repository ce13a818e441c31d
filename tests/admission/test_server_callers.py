"""Who may submit reviews: with a client CA, only a caller presenting a certificate it signed
(the apiserver's), refused in the TLS handshake otherwise; probes and metrics on their own
plain HTTP port, which serves no review. Real TLS on real sockets, the server run as kopf
runs it."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.admission import server
from tests.admission import reviews, serving
from tests.admission.serving import Pki


class Counting:
    """A fast path that allows everything and counts the reviews it was given."""

    def __init__(self) -> None:
        self.reviews: list[Mapping[str, Any]] = []

    async def __call__(
        self, data: Mapping[str, Any], hook: str | None, indexes: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.reviews.append(data)
        uid = data["request"]["uid"]
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True}}  # fmt: skip


async def _kopf_fn(data: Any, **_: Any) -> Any:
    raise AssertionError("the fast path answers these reviews")


KOPF_FN = functools.partial(_kopf_fn, indices={})  # kopf's function carries its indexes so


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path)


def _server(pki: Pki, fast: Counting, **kwargs: Any) -> server.WebhookServer:
    return server.WebhookServer(
        addr="127.0.0.1",
        certfile=str(pki.serving.cert),
        pkeyfile=str(pki.serving.key),
        cafile=str(pki.server_ca.cert),
        fast_review=fast,
        metrics_render=lambda: b"kitpin_up 1\n",
        drain_seconds=0,
        **kwargs,
    )


async def _refused(url: str, context: ssl.SSLContext) -> str:
    """The error a client gets, asserting it got no HTTP answer at all."""
    try:
        status, text = await serving.post(url, reviews.review(), context=context)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as e:
        return repr(e)
    raise AssertionError(f"answered {status}: {text}")


async def test_only_the_apiservers_certificate_gets_a_review_answered(pki: Pki) -> None:
    fast = Counting()
    srv = _server(pki, fast, client_ca=str(pki.client_ca.cert))
    async with serving.serving(srv, KOPF_FN) as url:
        status, _ = await serving.post(
            f"{url}/pin-pods", reviews.review(), context=pki.client_context(pki.apiserver)
        )
        assert status == 200
        assert len(fast.reviews) == 1

        # No certificate, or one from another CA (with the apiserver's very name): the
        # handshake fails; no request is read, no review decided.
        await _refused(f"{url}/pin-pods", pki.client_context())
        await _refused(f"{url}/pin-pods", pki.client_context(pki.stranger))
        assert len(fast.reviews) == 1

        # Probes and metrics on the webhook port need the certificate too.
        await _refused(f"{url}/readyz", pki.client_context())


async def test_allowed_names_narrow_the_callers_a_ca_signs(pki: Pki) -> None:
    fast = Counting()
    srv = _server(
        pki, fast, client_ca=str(pki.client_ca.cert), client_names=["kitpin-webhook-client"]
    )
    async with serving.serving(srv, KOPF_FN) as url:
        status, text = await serving.post(
            f"{url}/pin-pods", reviews.review(), context=pki.client_context(pki.apiserver)
        )
    assert status == 403
    assert "['kube-apiserver'], none of the allowed callers ['kitpin-webhook-client']" in text
    assert fast.reviews == []


async def test_the_name_that_is_allowed_is_served(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path, apiserver_name="kitpin-webhook-client")
    fast = Counting()
    srv = _server(
        pki, fast, client_ca=str(pki.client_ca.cert), client_names=["kitpin-webhook-client"]
    )
    async with serving.serving(srv, KOPF_FN) as url:
        status, _ = await serving.post(
            f"{url}/pin-pods", reviews.review(), context=pki.client_context(pki.apiserver)
        )
    assert status == 200 and len(fast.reviews) == 1


async def test_probes_and_metrics_have_a_plain_port_without_reviews(pki: Pki) -> None:
    fast = Counting()
    srv = _server(pki, fast, client_ca=str(pki.client_ca.cert), probe_port=0)
    async with serving.serving(srv, KOPF_FN):
        probes = f"http://127.0.0.1:{srv.probe_port}"
        assert await serving.get(f"{probes}/healthz") == (200, "ok\n")
        assert await serving.get(f"{probes}/readyz") == (200, "ok\n")
        assert await serving.get(f"{probes}/metrics") == (200, "kitpin_up 1\n")
        # No review is served there, whoever asks.
        status, _ = await serving.post(f"{probes}/pin-pods", reviews.review())
        assert status in (404, 405)
    assert fast.reviews == []


async def test_without_a_client_ca_anyone_is_served_and_kitpin_says_so(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    fast = Counting()
    srv = _server(pki, fast)
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        async with serving.serving(srv, KOPF_FN) as url:
            status, _ = await serving.post(
                f"{url}/pin-pods", reviews.review(), context=pki.client_context()
            )
            assert status == 200
            assert await serving.get(f"{url}/readyz", context=pki.client_context()) == (
                200,
                "ok\n",
            )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("any client that reaches" in w and "pull secrets" in w for w in warnings)


def test_names_without_a_ca_are_refused() -> None:
    with pytest.raises(ValueError, match="client_names without client_ca"):
        server.WebhookServer(insecure=True, client_names=["x"])


@pytest.mark.parametrize(
    ("peercert", "names", "expected"),
    [
        ({}, frozenset(), (401, "a client certificate signed by kitpin's client CA is required")),
        (None, frozenset({"a"}), (401, "a client certificate signed by kitpin's client CA")),
        ({"subject": ((("commonName", "a"),),)}, frozenset(), None),
        ({"subject": ((("commonName", "a"),),)}, frozenset({"a"}), None),
        ({"subject": ((("commonName", "x"),),), "subjectAltName": (("DNS", "a"),)},
         frozenset({"a"}), None),
        ({"subject": ((("commonName", "x"),),), "subjectAltName": (("IP Address", "a"),)},
         frozenset({"a"}), (403, "the client certificate names ['x']")),
    ],
)  # fmt: skip
def test_caller_problem(
    peercert: dict[str, Any] | None,
    names: frozenset[str],
    expected: tuple[int, str] | None,
) -> None:
    found = server.caller_problem(peercert, required=True, names=names)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found[0] == expected[0] and expected[1] in found[1]
    assert server.caller_problem(peercert, required=False, names=names) is None
