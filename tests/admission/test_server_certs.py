"""Certificate rotation: new files are loaded into the live TLS context, so the port never
closes and new connections get the new certificate; a half-written pair keeps the previous
certificate until it loads; a new client CA is trusted from then on."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from controller.admission import server
from harness import pki
from tests.admission import reviews, serving
from tests.admission.serving import Pki

INTERVAL = 0.05


async def _allow(data: Mapping[str, Any], hook: str | None, indexes: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": data["request"]["uid"], "allowed": True}}  # fmt: skip


async def _kopf_fn(data: Any, **_: Any) -> Any:
    raise AssertionError("the fast path answers these reviews")


KOPF_FN = functools.partial(_kopf_fn, indices={})


def _server(files: Pki, **kwargs: Any) -> server.WebhookServer:
    return server.WebhookServer(
        addr="127.0.0.1",
        certfile=str(files.serving.cert),
        pkeyfile=str(files.serving.key),
        fast_review=_allow,
        drain_seconds=0,
        file_check_interval=INTERVAL,
        **kwargs,
    )


async def _issuer(url: str, context: ssl.SSLContext) -> str:
    """The common name of the CA that issued the certificate a new connection is served."""
    parts = urlsplit(url)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    try:
        cert = writer.get_extra_info("peercert")
    finally:
        writer.close()
        await writer.wait_closed()
    return dict(x[0] for x in cert["issuer"])["commonName"]


def _trusting(*cas: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(cafile=str(ca))
    return context


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(INTERVAL / 2)


async def test_a_rotated_certificate_is_served_without_closing_the_port(tmp_path: Path) -> None:
    files = Pki.make(tmp_path)
    new_ca = pki.CA("kitpin-test-rotated-ca")
    new_ca_files = new_ca.write(tmp_path, "rotated-ca")
    both = _trusting(files.server_ca.cert, new_ca_files.cert)
    failures: list[str] = []
    served = 0

    async with serving.serving(_server(files), KOPF_FN) as url:

        async def hammer() -> None:
            nonlocal served
            while True:
                try:
                    status, _ = await serving.post(
                        f"{url}/pin-pods", reviews.review(), context=both
                    )
                except Exception as e:  # any failure to answer counts
                    failures.append(repr(e))
                else:
                    served += 1
                    if status != 200:
                        failures.append(f"status {status}")
                await asyncio.sleep(0)

        clients = asyncio.create_task(hammer())
        try:
            assert await _issuer(url, both) == "kitpin-test-serving-ca"
            # cert-manager writes a new pair: the certificate first, then the key.
            rotated = new_ca.server_cert(dns_names=("localhost",), ips=("127.0.0.1",))
            files.serving.cert.write_bytes(rotated.cert_pem)
            await asyncio.sleep(INTERVAL * 3)  # checks see a half-written pair meanwhile
            files.serving.key.write_bytes(rotated.key_pem)

            async def rotated_served() -> bool:
                return await _issuer(url, both) == "kitpin-test-rotated-ca"

            await _until(rotated_served, "the rotated certificate to be served")
            before = served

            async def more() -> bool:
                return served > before + 5

            await _until(more, "more answers after the rotation")
        finally:
            clients.cancel()
            await asyncio.gather(clients, return_exceptions=True)
    assert failures == []
    assert served > 10


async def test_a_pair_that_does_not_load_keeps_the_previous_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = Pki.make(tmp_path)
    old = _trusting(files.server_ca.cert)
    other = pki.CA("kitpin-test-rotated-ca").server_cert(ips=("127.0.0.1",))
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        async with serving.serving(_server(files), KOPF_FN) as url:
            files.serving.cert.write_bytes(other.cert_pem)  # and the old key: no pair

            async def warned() -> bool:
                return any("do not load" in r.getMessage() for r in caplog.records)

            await _until(warned, "the warning about the half-written pair")
            assert await _issuer(url, old) == "kitpin-test-serving-ca"
            status, _ = await serving.post(f"{url}/pin-pods", reviews.review(), context=old)
            assert status == 200


async def test_a_new_client_ca_is_trusted_once_written(tmp_path: Path) -> None:
    files = Pki.make(tmp_path)
    next_ca = pki.CA("kitpin-test-next-client-ca")
    next_client = next_ca.client_cert("kube-apiserver").write(tmp_path, "next-apiserver")
    srv = _server(files, client_ca=str(files.client_ca.cert))
    async with serving.serving(srv, KOPF_FN) as url:
        newcomer = files.client_context(next_client)
        try:
            await serving.post(f"{url}/pin-pods", reviews.review(), context=newcomer)
        except Exception:  # refused in the handshake, as expected
            pass
        else:
            raise AssertionError("a certificate of a CA not yet trusted was served")
        files.client_ca.cert.write_bytes(next_ca.cert_pem)

        async def trusted() -> bool:
            try:
                status, _ = await serving.post(
                    f"{url}/pin-pods", reviews.review(), context=newcomer
                )
            except Exception:  # not reloaded yet
                return False
            return status == 200

        await _until(trusted, "the new client CA to be trusted")
        # The previous CA stays trusted until a restart (documented): a rotation never
        # refuses the apiserver while its kubeconfig still holds the old certificate.
        status, _ = await serving.post(
            f"{url}/pin-pods", reviews.review(), context=files.client_context(files.apiserver)
        )
        assert status == 200
