"""One task in flight per key: the single-flight primitive kitpin's I/O layers share.

Concurrent callers that need the same thing (a registry's API version check, a token for one
scope, a pull Secret, a config blob) join one task instead of each asking again. The task is
the callers' shared work, not any one caller's: a caller that gives up (its review's deadline)
leaves it running for the others, and a task cancelled at shutdown is told apart from the
caller's own cancellation. When it ends its slot is freed, so the next call after a failure
tries again; nothing about the outcome is remembered here (callers cache what they want).

The resolver's flights carry more (cache-slot ownership, invalidation) and keep their own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Flights"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Flights(Generic[K, V]):
    """Tasks in flight by key."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def in_flight(self, key: K) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    async def join(
        self, key: K, start: Callable[[], Coroutine[Any, Any, V]], *, name: str | None = None
    ) -> asyncio.Task[V]:
        """Wait for ``key``'s task to end (``start()`` begins one when none is in flight) and
        return it, done: read ``task.result()``, or check ``task.cancelled()`` first when
        :meth:`cancel_all` may have run. Cancelling the caller does not cancel the task."""
        task = self._tasks.get(key)
        if task is None or task.done():  # done: over, its outcome is not for later callers
            task = asyncio.create_task(start(), name=name)
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        await asyncio.wait([task])
        return task

    async def result(
        self, key: K, start: Callable[[], Coroutine[Any, Any, V]], *, name: str | None = None
    ) -> V:
        """:meth:`join`, then the task's result (its exception is raised to every caller)."""
        return (await self.join(key, start, name=name)).result()

    async def cancel_all(self) -> None:
        """Cancel every task in flight (shutdown) and wait until they have ended."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers got it (or all of them left already)
