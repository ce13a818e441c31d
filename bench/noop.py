"""The floor for kitpin's stack: a bare aiohttp TLS AdmissionReview responder.

Same TLS/HTTP stack as kitpin's webhook server (aiohttp's web server on the default asyncio
loop, an ``ssl.create_default_context(CLIENT_AUTH)`` context like kopf builds, an EC P-256
certificate like ``kitpin run --dev`` generates, ``json.loads`` of the body and
``aiohttp.web.json_response`` of the answer), and nothing else: every review is allowed,
unchanged. Whatever kitpin costs above this is kopf's and kitpin's own work.

    python -m bench.noop --port 9443 --cert cert.pem --key key.pem [--capture DIR]

A review POSTed under ``/annotate/`` is answered with a JSON patch that adds one annotation
(``bench.kitpin.dev/noop``): the apiserver case registers the no-op server in kitpin's place
(mutating webhooks under ``/annotate/``), so the apiserver does the same kind of work as for
kitpin (send, receive, apply a patch) and the bench can see which webhooks are active.

``--capture DIR`` also writes the first reviews it receives to ``DIR/<n>.json``: the bench
registers it as a webhook for a moment to record the exact AdmissionReview kube-apiserver
sends for a Pod, and replays that.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp.web

CAPTURE: list[Path] = []  # [directory] when capturing
CAPTURE_LIMIT = 16
_captured = 0
ANNOTATION = "bench.kitpin.dev/noop"


def _annotate(obj: Any) -> str:
    """A base64 JSON patch adding :data:`ANNOTATION` to ``obj``."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    op: dict[str, Any]
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        op = {"op": "add", "path": "/metadata/annotations/bench.kitpin.dev~1noop", "value": "1"}
    else:
        op = {"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: "1"}}
    return base64.b64encode(json.dumps([op]).encode()).decode()


async def review(request: aiohttp.web.Request) -> aiohttp.web.Response:
    global _captured
    raw = await request.read()
    data: dict[str, Any] = json.loads(raw)
    if CAPTURE and _captured < CAPTURE_LIMIT:
        _captured += 1
        (CAPTURE[0] / f"{_captured}.json").write_bytes(raw)
    req = data.get("request") or {}
    answer: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": True}
    if request.path.startswith("/annotate/"):
        answer["patchType"] = "JSONPatch"
        answer["patch"] = _annotate(req.get("object"))
    return aiohttp.web.json_response(
        {
            "apiVersion": data.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": answer,
        }
    )


async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
    return aiohttp.web.Response(text="ok\n")


async def serve(host: str, port: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = aiohttp.web.Application(client_max_size=8 * 1024 * 1024)
    app.add_routes([aiohttp.web.get("/healthz", healthz), aiohttp.web.post("/{id:.*}", review)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--capture", type=Path, help="write the first reviews received here")
    args = p.parse_args()
    if args.capture:
        args.capture.mkdir(parents=True, exist_ok=True)
        CAPTURE.append(args.capture)
    try:
        asyncio.run(serve(args.host, args.port, args.cert, args.key))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
