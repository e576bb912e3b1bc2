"""A connection pool whose waiters are served first come, first served.

SQLAlchemy's async pool keeps idle connections in an ``asyncio.Queue``. When a connection is
returned, that queue wakes its longest waiter, but a request arriving before the waiter runs
takes the connection first, and the waiter goes back to the end of the line: under a burst
the same request can lose again and again until its pool timeout. Here a returned connection
is handed straight to the longest waiter, so a pool wait is bounded by the connections ahead
of it, and the pool timeout bounds it in any case.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue


class HandOffQueue:
    """The subset of ``asyncio.Queue`` the pool uses; ``put`` gives to the oldest ``get``."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque[Any] = deque()  # only ever non-empty while nobody waits
        self._getters: deque[asyncio.Future[Any]] = deque()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def put_nowait(self, item: Any) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(item)
                return
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Any:
        if self._items:
            return self._items.popleft()
        getter = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            return await getter
        except asyncio.CancelledError:
            # Timed out at the moment a connection was handed over: pass it on, never lose it.
            if getter.done() and not getter.cancelled():
                self.put_nowait(getter.result())
            raise


class _HandOffAdaptedQueue(AsyncAdaptedQueue):
    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._fifo = HandOffQueue(maxsize)

    @property
    def _queue(self) -> HandOffQueue:  # type: ignore[override]
        return self._fifo


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    _queue_class = _HandOffAdaptedQueue  # type: ignore[assignment]
