"""One fair, ordered path for every write to an SQLite file, across the processes that share it.

SQLite has one writer at a time, and its busy handler is not a queue: a waiting writer sleeps
and polls, and a writer that commits back to back (the prediction log under load) can take
the lock again before the sleeper wakes, for as long as the load lasts. Here writers queue
instead: first in order within a process (asyncio.Lock wakes its waiters first come, first
served), then across processes through two lock files beside the database used as a
turnstile: a process waiting for the write lock holds the turnstile, and a process that has
just written must pass the turnstile before it writes again, so two processes take turns
and none waits behind more than one write of each other process. A turn not reached within
the bound is refused as busy (503, Retry-After), never as "unavailable".

Networked databases (MySQL) lock rows, not the file: there the path only measures.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from serve_app.admission import ServiceBusyError
from serve_app.sqlite_writer import sqlite_file_url

DATABASE_BUSY = ("The service is busy: database work is queued past its bound. Retry after "
                 "the number of seconds in Retry-After.")
WRITES_QUEUED = "database_writes_queued"
# How often a waiting process looks at the lock files again: a write takes milliseconds.
POLL_S = 0.002


class DatabaseBusyError(ServiceBusyError):
    def __init__(self, *, retry_after: int) -> None:
        super().__init__(DATABASE_BUSY, retry_after=retry_after, reason=WRITES_QUEUED)


class _FileTurns:
    """The cross-process part: a turnstile lock file and a write lock file (flock)."""

    def __init__(self, database: Path) -> None:
        self._turnstile = open(f"{database}-write-turn", "a")  # noqa: SIM115 - held for the app
        self._write = open(f"{database}-write-lock", "a")  # noqa: SIM115

    async def acquire(self, deadline: float) -> None:
        await _take(self._turnstile, deadline)
        try:
            await _take(self._write, deadline)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._write, fcntl.LOCK_UN)

    def close(self) -> None:
        self._turnstile.close()
        self._write.close()


async def _take(lock_file: IO[str], deadline: float) -> None:
    # Polled, not blocking in a thread: a blocked flock cannot be given up at the deadline.
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            await asyncio.sleep(POLL_S)


class WritePath:
    """``async with path.turn(): <one write transaction>``: writes in order, bounded wait."""

    def __init__(self, *, sqlite: bool, sqlite_file: Path | None, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._lock = asyncio.Lock() if sqlite else None
        self._files = _FileTurns(sqlite_file) if sqlite and sqlite_file is not None else None
        self.queued = 0  # writers of this process waiting for or holding their turn
        self.turn_s = 0.01  # moving average of a turn (wait excluded): the Retry-After estimate

    @classmethod
    def for_url(cls, url: str, *, max_wait_s: float) -> WritePath:
        sqlite_file = sqlite_file_url(url)
        return cls(sqlite=make_url(url).get_backend_name() == "sqlite",
                   sqlite_file=Path(sqlite_file.database) if sqlite_file else None,
                   max_wait_s=max_wait_s)

    def retry_after(self) -> int:
        return max(1, math.ceil(self.queued * self.turn_s))

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        deadline = time.monotonic() + self.max_wait_s
        self.queued += 1
        try:
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._lock.acquire()
            except TimeoutError:
                raise DatabaseBusyError(retry_after=self.retry_after()) from None
            try:
                if self._files is not None:
                    await self._files.acquire(deadline)
            except BaseException as err:
                self._lock.release()
                if isinstance(err, TimeoutError):
                    raise DatabaseBusyError(retry_after=self.retry_after()) from None
                raise
            started = time.monotonic()
            try:
                yield
            finally:
                if self._files is not None:
                    self._files.release()
                self._lock.release()
                self.turn_s += 0.1 * (time.monotonic() - started - self.turn_s)
        finally:
            self.queued -= 1

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
