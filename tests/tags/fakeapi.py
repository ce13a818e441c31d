"""tests/kubeapi/fakeapi.py's fake apiserver with what the tag records and the Lease need on
top (without editing it): a POST of a name that exists answers 409 AlreadyExists, a POST into a
resource with a ``status`` subresource drops ``status`` (as kube-apiserver does), and hooks run
before a request is answered (to let "another replica" write in between)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import pytest
import trustme

from tests.kubeapi.fakeapi import FakeApiServer, Seen, _status

STATUS_SUBRESOURCE = ("/apis/kitpin.dev/",)
"""Collections whose objects have a ``status`` subresource: a create cannot set it."""

Hook = Callable[[str, str], None]
"""``(method, path)``, called before the request is answered."""


@dataclass(kw_only=True)
class TagsApiServer(FakeApiServer):
    hooks: list[Hook] = field(default_factory=list)

    def stored(self, path: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[path])

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        for hook in list(self.hooks):
            hook(request.method, request.raw_path)
        if request.method != "POST":
            return await super()._handle(request)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        user = self._user(request)
        path = request.raw_path
        self.seen.append(
            Seen(
                method="POST",
                path=path,
                headers=dict(request.headers),
                body=copy.deepcopy(body),
                user=user,
            )
        )
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        if path in self.forbidden:
            return _status(403, "Forbidden", f'User "{user}" cannot create resource in {path}')
        assert isinstance(body, dict)
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', '')}{len(self.objects):05d}"
        target = f"{path}/{meta['name']}"
        resource = path.rsplit("/", 1)[-1]
        if target in self.objects:
            return _status(409, "AlreadyExists", f'{resource} "{meta["name"]}" already exists')
        if path.startswith(STATUS_SUBRESOURCE):
            body.pop("status", None)
        return aiohttp.web.json_response(self.put(target, body), status=201)


@pytest.fixture
async def tags_api() -> AsyncIterator[TagsApiServer]:
    """A started :class:`TagsApiServer`, the token ``t0k3n`` valid."""
    server = TagsApiServer(ca=trustme.CA(), tokens={"t0k3n": "kitpin"})
    await server.start()
    yield server
    await server.stop()
