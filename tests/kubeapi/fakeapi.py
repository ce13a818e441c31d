"""A small fake apiserver for kitpin's own API calls, over real TLS on 127.0.0.1.

It answers the way kube-apiserver does where kitpin depends on it: who the caller is (a
client certificate signed by the CA, a bearer token, basic auth; else 401), ``metav1.Status``
bodies for errors (404 NotFound, 403 Forbidden, 409 Conflict), GET of one object by path,
POST into a collection (``generateName``), and JSON merge patch (``application/merge-patch+
json`` only) whose ``metadata.resourceVersion`` must match the stored one; a patch of a
``/status`` subresource changes only ``status``. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import pytest
import trustme

MERGE_PATCH = "application/merge-patch+json"


@dataclass(kw_only=True)
class Seen:
    method: str
    path: str
    """The raw (still percent-encoded) path."""
    headers: dict[str, str]
    body: Any
    user: str | None


@dataclass(kw_only=True)
class FakeApiServer:
    ca: trustme.CA
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Objects by raw path, e.g. ``/api/v1/namespaces/ns/secrets/name``."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Valid bearer tokens, and the user each authenticates."""
    passwords: dict[tuple[str, str], str] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    """Paths answered 403 (RBAC says no)."""
    delay: float = 0.0
    """Seconds before answering anything."""
    seen: list[Seen] = field(default_factory=list)
    resource_version: int = 100
    _runner: aiohttp.web.AppRunner | None = None
    port: int = 0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem.bytes().decode()

    @property
    def ca_b64(self) -> str:
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()

    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self.objects[path] = stored
        return stored

    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]

    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> FakeApiServer:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is one way in
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await aiohttp.web.SockSite(self._runner, sock, ssl_context=context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- answers -------------------------------------------------------------------------

    def _user(self, request: aiohttp.web.Request) -> str | None:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport else None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return f"cert:{value}"
        auth = request.headers.get("Authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme == "Bearer":
            return self.tokens.get(credentials)
        if scheme == "Basic":
            user, _, password = base64.b64decode(credentials).decode().partition(":")
            return self.passwords.get((user, password))
        return None

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        user = self._user(request)
        path = request.raw_path
        self.seen.append(
            Seen(
                method=request.method,
                path=path,
                headers=dict(request.headers),
                body=copy.deepcopy(body),
                user=user,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        resource, name = _resource_and_name(path)
        if path in self.forbidden:
            verb = {"GET": "get", "POST": "create", "PATCH": "patch"}.get(request.method, "?")
            return _status(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: User "{user}" cannot {verb} resource '
                f'"{resource}"',
            )
        if request.method == "GET":
            found = self.objects.get(path)
            if found is None:
                return _status(404, "NotFound", f'{resource} "{name}" not found')
            return aiohttp.web.json_response(found)
        if request.method == "POST":
            assert isinstance(body, dict)
            meta = body.setdefault("metadata", {})
            if not meta.get("name"):
                meta["name"] = f"{meta.get('generateName', '')}{len(self.objects):05d}"
            created = self.put(f"{path}/{meta['name']}", body)
            return aiohttp.web.json_response(created, status=201)
        if request.method == "PATCH":
            if request.content_type != MERGE_PATCH:
                return _status(415, "UnsupportedMediaType", request.content_type)
            subresource = path.endswith("/status")
            target = path.removesuffix("/status") if subresource else path
            stored = self.objects.get(target)
            if stored is None:
                return _status(404, "NotFound", f'{resource} "{name}" not found')
            assert isinstance(body, dict)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
                return _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                )
            if subresource:
                patch = {"status": body.get("status")} if "status" in body else {}
            else:
                patch = body
            merged = merge_patch(stored, patch)
            merged["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[target] = merged
            return aiohttp.web.json_response(merged)
        return _status(405, "MethodNotAllowed", request.method)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _resource_and_name(path: str) -> tuple[str, str]:
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts and parts[-1] == "status":
        parts = parts[:-1]
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return "", ""


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApiServer]:
    """A started :class:`FakeApiServer` with its own CA, the token ``t0k3n`` valid."""
    server = await FakeApiServer(ca=trustme.CA(), tokens={"t0k3n": "kitpin"}).start()
    yield server
    await server.stop()
