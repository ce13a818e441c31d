"""Every replica's view of the ModelKitTag records: list, then watch, into the writer.

The writer (:class:`controller.tags.writer.TagWriter`) compares what admissions see with the
records this replica knows, and the drift watch works from them; both read
:meth:`~controller.tags.writer.TagWriter.records`, which this informer keeps current:

1. **list** the records a page at a time (``limit`` :data:`PAGE`, ``continue`` tokens): each
   page is decoded, handed to :meth:`~controller.tags.writer.TagWriter.remember` and dropped,
   so 10,000 records never sit in memory as one decoded list (the view keeps about a
   kilobyte per record, less than the ~2-3 KB of JSON each arrives as). A record the replica
   knew that the list no longer has was deleted meanwhile: forgotten. A ``continue`` token
   that expired (410) starts the list again;
2. **watch** from the list's ``resourceVersion`` (``allowWatchBookmarks``, a server-side
   timeout of :data:`WATCH_SECONDS`, then watch again from the last version seen): ``ADDED``
   and ``MODIFIED`` are remembered, ``DELETED`` forgotten; the stream is read line by line,
   one event decoded at a time. A watch that is too old (410 Gone, or an ``ERROR`` event)
   lists again; any other failure waits :data:`RETRY` seconds and lists again.

Why not kopf's watch (``kopf.on.event``), which kitpin uses for its policies: kopf processes
every object it lists through its per-object machinery (a worker task, loggers, memories, one
log line each); with 10,000 records the replica's RSS grew by ~230 MiB (bench/results/tags/).
Records need none of that: they are data, read by kitpin alone.

The apiserver is reached through :class:`RecordSource` (:class:`ApiRecordSource`: ``GET`` of
the list through :class:`controller.kubeapi.KubeAPI`, the watch stream over aiohttp with the
same login; a 401 logs in again). This module imports no kopf.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import aiohttp

from controller import kubeapi
from controller.tags import model

__all__ = [
    "PAGE",
    "ApiRecordSource",
    "GoneError",
    "Page",
    "RecordInformer",
    "RecordSource",
    "Sink",
]

logger = logging.getLogger(__name__)

PAGE: Final = 100
"""Records per list page: ~300 KB of JSON, decoded and dropped one page at a time (measured: 500
per page left ~20% more resident memory behind for 10,000 records)."""
WATCH_SECONDS: Final = 290
"""The watch's server-side timeout; then the informer watches again from where it was."""
RETRY: Final = 2.0
"""Seconds before listing again after a failure."""
NO_CRD_RETRY: Final = 30.0
"""Seconds before listing again when the ModelKitTag CRD is not installed (404)."""
LINE_LIMIT: Final = 4 * 1024 * 1024
"""The longest watch event line read (a record is at most a few tens of KiB)."""


class GoneError(Exception):
    """The ``resourceVersion`` or ``continue`` token is too old (410): list again."""


@dataclass(frozen=True, kw_only=True)
class Page:
    items: list[Mapping[str, Any]]
    resource_version: str
    """The list's ``metadata.resourceVersion`` (the watch starts there)."""
    next: str | None
    """``metadata.continue``: the next page's token, None on the last page."""


class RecordSource(Protocol):
    async def page(self, token: str | None) -> Page:
        """One page of the list (``token``: the previous page's ``continue``);
        :class:`GoneError` when the token expired."""
        ...

    def watch(self, resource_version: str) -> AsyncIterator[Mapping[str, Any]]:
        """The watch events from ``resource_version`` (``{"type", "object"}``) until the
        server ends the stream; :class:`GoneError` when the version is too old."""
        ...


class Sink(Protocol):
    """What the informer feeds (:class:`controller.tags.writer.TagWriter`)."""

    def remember(self, body: Mapping[str, Any]) -> None: ...

    def forget(self, name: str) -> None: ...

    def records(self) -> list[model.TagRecord]: ...


class RecordInformer:
    def __init__(
        self,
        source: RecordSource,
        sink: Sink,
        *,
        retry: float = RETRY,
        no_crd_retry: float = NO_CRD_RETRY,
    ) -> None:
        self._source = source
        self._sink = sink
        self._retry = retry
        self._no_crd_retry = no_crd_retry
        self._told_no_crd = False
        self.synced = asyncio.Event()
        """Set once the first full list is in the view."""

    async def run(self) -> None:
        """List, then watch, forever (cancel to stop)."""
        while True:
            try:
                version = await self.list()
                while True:
                    version = await self.watch(version)
            except GoneError:
                logger.info("the ModelKitTag watch is too old: listing again")
            except asyncio.CancelledError:
                raise
            except kubeapi.NotFoundError:
                if not self._told_no_crd:
                    logger.warning(
                        "the ModelKitTag CRD is not installed, so no tag records are kept "
                        "(install deploy/crds/kitpin.dev_modelkittags.yaml, as the chart does, "
                        "or set tags.records: false); looking again every %gs",
                        self._no_crd_retry,
                    )
                    self._told_no_crd = True
                await asyncio.sleep(self._no_crd_retry)
            except Exception as e:  # the loop must survive anything: list again
                logger.warning("watching ModelKitTag records failed (%s); listing again", e)
                await asyncio.sleep(self._retry)

    async def list(self) -> str:
        """Every record into the view, a page at a time; the list's version."""
        while True:
            seen: set[str] = set()
            token: str | None = None
            try:
                while True:
                    page = await self._source.page(token)
                    for body in page.items:
                        self._sink.remember(body)
                        name = _name(body)
                        if name:
                            seen.add(name)
                    if not page.next:
                        break
                    token = page.next
            except GoneError:
                logger.info("a ModelKitTag list page expired: listing again")
                continue
            for record in self._sink.records():
                if record.name not in seen:
                    self._sink.forget(record.name)
            if self._told_no_crd:
                logger.info("the ModelKitTag CRD is installed now: keeping tag records")
                self._told_no_crd = False
            self.synced.set()
            return page.resource_version

    async def watch(self, version: str) -> str:
        """One watch stream from ``version``; the last version seen when it ends."""
        async for event in self._source.watch(version):
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, Mapping):
                continue
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise GoneError(str(obj.get("message") or "Gone"))
                raise kubeapi.ApiError(
                    "WATCH",
                    "modelkittags",
                    int(obj.get("code") or 500),
                    str(obj.get("reason") or "Error"),
                    str(obj.get("message") or ""),
                )
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED"):
                self._sink.remember(obj)
            elif kind == "DELETED":
                name = _name(obj)
                if name:
                    self._sink.forget(name)
            if isinstance(rv, str) and rv:
                version = rv  # BOOKMARK events carry only this
        return version


def _name(body: Mapping[str, Any]) -> str | None:
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) and name else None


def collection_path() -> str:
    return kubeapi.path("apis", model.GROUP, model.VERSION, model.PLURAL)


class ApiRecordSource:
    """:class:`RecordSource` over :class:`controller.kubeapi.KubeAPI` (``list`` and
    ``watch`` on ``modelkittags``: the chart's CRD-derived rules)."""

    def __init__(
        self,
        api: kubeapi.KubeAPI[Any],
        *,
        page_size: int = PAGE,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self._api = api
        self._page_size = page_size
        self._watch_seconds = watch_seconds

    async def page(self, token: str | None) -> Page:
        query: dict[str, str | int] = {"limit": self._page_size}
        if token:
            query["continue"] = token
        try:
            answer = await self._api.get(f"{collection_path()}?{urlencode(query)}", timeout=60)
        except kubeapi.ApiError as e:
            if e.status == 410:
                raise GoneError(str(e)) from e
            raise
        meta = answer.get("metadata") or {}
        items = answer.get("items") or []
        return Page(
            items=[i for i in items if isinstance(i, Mapping)],
            resource_version=str(meta.get("resourceVersion") or ""),
            next=meta.get("continue") or None,
        )

    async def watch(self, resource_version: str) -> AsyncIterator[Mapping[str, Any]]:
        endpoint = self._api.endpoint
        query = urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": self._watch_seconds,
            }
        )
        headers = {"Accept": "application/json", "User-Agent": kubeapi.USER_AGENT}
        auth = kubeapi.authorization(endpoint)
        if auth:
            headers["Authorization"] = auth
        url = endpoint.server.rstrip("/") + collection_path() + "?" + query
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self._watch_seconds + 30)
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=kubeapi.ssl_context(endpoint)),
                proxy=endpoint.proxy_url,
                trust_env=endpoint.trust_env,
                timeout=timeout,
                read_bufsize=LINE_LIMIT,
            ) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status == 401:
                await self._api.relogin()
                raise kubeapi.UnauthorizedError(
                    "GET", collection_path(), 401, "Unauthorized", "logged in again"
                )
            if response.status == 410:
                raise GoneError("the watch's resourceVersion is too old")
            if response.status >= 400:
                text = (await response.read())[:512].decode("utf-8", "replace")
                raise kubeapi.ApiError(
                    "GET", collection_path(), response.status, response.reason or "", text
                )
            while True:
                line = await response.content.readline()
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a broken line: the next list repairs whatever it carried
                if isinstance(event, Mapping):
                    yield event
