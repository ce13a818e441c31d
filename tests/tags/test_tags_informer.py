"""The records informer with a fake source: paged lists into the writer's view (a record the
list no longer has is forgotten), the watch's events, bookmarks, 410 Gone and failures that
list again; and what the view costs per record."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller import kubeapi
from controller.tags import informer, model, wire
from controller.tags.informer import GoneError, Page, RecordInformer
from controller.tags.writer import TagWriter
from tests.tags.tagfakes import NOW, deployment, digest, key


def stored(tag: str, rv: int, *, workloads: int = 1) -> dict[str, Any]:
    k = key(tag=tag)
    first = model.Resolved(digest=digest(tag), at=NOW, seen_by="admission")
    status = model.initial(first)
    for i in range(workloads):
        status = (
            model.apply(
                status,
                model.Pinned(digest=digest(tag), workload=deployment(f"{tag}-{i}"), at=NOW),
                now=NOW,
            )
            or status
        )
    body = wire.new_object(k, first)
    body["metadata"]["resourceVersion"] = str(rv)
    body["status"] = wire.status_to_wire(status, k)
    return body


@dataclass
class FakeSource:
    """Pages by token, and a script of watch streams (each a list of events, or an
    exception to raise instead)."""

    pages: dict[str | None, Page] = field(default_factory=dict)
    gone_tokens: set[str] = field(default_factory=set)
    streams: list[list[Mapping[str, Any]] | Exception] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    watched: list[str] = field(default_factory=list)

    async def page(self, token: str | None) -> Page:
        self.asked.append(token or "")
        if token in self.gone_tokens:
            self.gone_tokens.discard(token)
            raise GoneError("expired")
        return self.pages[token]

    async def watch(self, resource_version: str) -> AsyncIterator[Mapping[str, Any]]:
        self.watched.append(resource_version)
        if not self.streams:
            await asyncio.Event().wait()  # nothing more: the test cancels
        step = self.streams.pop(0)
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event


def view() -> TagWriter:
    return TagWriter(None)  # type: ignore[arg-type]  # the informer never writes


def names(w: TagWriter) -> set[str]:
    return {r.key.tag for r in w.records()}


async def test_the_list_is_read_a_page_at_a_time_and_forgets_what_is_gone() -> None:
    source = FakeSource(
        pages={
            None: Page(items=[stored("a", 5), stored("b", 6)], resource_version="9", next="p2"),
            "p2": Page(items=[stored("c", 7)], resource_version="9", next=None),
        }
    )
    w = view()
    w.remember(stored("deleted-meanwhile", 1))
    inf = RecordInformer(source, w)
    assert await inf.list() == "9"
    assert names(w) == {"a", "b", "c"}
    assert source.asked == ["", "p2"] and inf.synced.is_set()


async def test_an_expired_page_token_lists_again() -> None:
    source = FakeSource(
        pages={
            None: Page(items=[stored("a", 5)], resource_version="9", next="p2"),
            "p2": Page(items=[stored("b", 7)], resource_version="9", next=None),
        },
        gone_tokens={"p2"},
    )
    w = view()
    assert await RecordInformer(source, w).list() == "9"
    assert source.asked == ["", "p2", "", "p2"] and names(w) == {"a", "b"}


async def test_watch_events_update_the_view_and_bookmarks_move_the_version() -> None:
    w = view()
    w.remember(stored("a", 5))
    w.remember(stored("b", 5))
    events: list[Mapping[str, Any]] = [
        {"type": "ADDED", "object": stored("c", 10)},
        {"type": "MODIFIED", "object": stored("a", 11, workloads=3)},
        {"type": "DELETED", "object": stored("b", 12)},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
    ]
    source = FakeSource(streams=[events])
    assert await RecordInformer(source, w).watch("9") == "20"
    assert names(w) == {"a", "c"}
    record = w.record(key(tag="a"))
    assert record is not None and record.status is not None and record.status.in_use == 3


async def test_a_410_in_the_stream_is_gone() -> None:
    source = FakeSource(
        streams=[[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "old"}}]]
    )
    with pytest.raises(GoneError):
        await RecordInformer(source, view()).watch("9")
    source = FakeSource(streams=[[{"type": "ERROR", "object": {"code": 500, "reason": "X"}}]])
    with pytest.raises(kubeapi.ApiError):
        await RecordInformer(source, view()).watch("9")


async def test_run_watches_again_and_lists_again_after_gone_or_a_failure() -> None:
    page = Page(items=[stored("a", 5)], resource_version="9", next=None)
    source = FakeSource(
        pages={None: page},
        streams=[
            [{"type": "ADDED", "object": stored("b", 10)}],  # ends: watch again from 10
            GoneError("too old"),  # list again
            kubeapi.UnreachableError("down"),  # list again after the retry pause
        ],
    )
    w = view()
    task = asyncio.create_task(RecordInformer(source, w, retry=0).run())
    try:
        for _ in range(200):
            if len(source.watched) >= 4:
                break
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert source.watched[:4] == ["9", "10", "9", "9"]
    assert source.asked[:3] == ["", "", ""]
    assert names(w) == {"a"}  # b was not in the lists that followed


def test_the_view_costs_about_a_kilobyte_per_record() -> None:
    bodies = [stored(f"t{i:05d}", i) for i in range(2000)]
    w = view()
    gc.collect()
    tracemalloc.start()
    try:
        for body in bodies:
            w.remember(body)
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size / len(bodies) < 2048, f"{size / len(bodies):.0f} bytes per record"


def test_the_collection_path() -> None:
    assert informer.collection_path() == "/apis/kitpin.dev/v1alpha1/modelkittags"


async def test_a_missing_crd_is_said_once_and_looked_for_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = Page(items=[stored("a", 5)], resource_version="9", next=None)

    class NoCrdYet(FakeSource):
        misses = 2

        async def page(self, token: str | None) -> Page:
            if self.misses:
                self.misses -= 1
                raise kubeapi.NotFoundError("GET", "/apis/kitpin.dev", 404, "NotFound", "")
            return await super().page(token)

    source = NoCrdYet(pages={None: page})
    w = view()
    inf = RecordInformer(source, w, no_crd_retry=0)
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.synced.wait(), timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    said = [r.getMessage() for r in caplog.records if "CRD is not installed" in r.getMessage()]
    assert len(said) == 1 and names(w) == {"a"}
