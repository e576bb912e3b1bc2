"""The prediction log's SQLite transactions in one thread of their own: one hop per commit.

Through aiosqlite every DBAPI call of a transaction (execute, fetch, commit, the pool's reset)
is a hop to its thread and back: the log's one-row commit cost 1.4 CPU ms that way and 0.4 as
one call of a synchronous engine in a thread, a 32-row one 3.1 against 1.5. The connection is
SQLite's own driver (pysqlite) with the same pragmas as the service's async engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url

T = TypeVar("T")


def apply_sqlite_pragmas(dbapi_conn: Any, busy_timeout_s: float) -> None:
    # WAL lets readers run beside the log writer; foreign keys are off by default.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    cursor.close()


def sqlite_file_url(url: str | URL) -> URL | None:
    """The URL's SQLite file for the synchronous driver; None for another database or an
    in-memory one (which a second connection would not see)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return parsed.set(drivername="sqlite")


class SqliteThreadWriter:
    """``await writer.run(work)``: ``work(connection)`` as one transaction in the writer's
    thread (committed when it returns, rolled back when it raises)."""

    def __init__(self, url: URL, *, busy_timeout_s: float) -> None:
        self._engine = sqlalchemy.create_engine(url, connect_args={"timeout": busy_timeout_s},
                                                pool_size=1)
        event.listen(self._engine, "connect",
                     lambda dbapi_conn, _record: apply_sqlite_pragmas(dbapi_conn, busy_timeout_s))
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction,
                                                                work)

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as conn:
            return work(conn)

    def close(self) -> None:
        self._thread.submit(self._engine.dispose)  # in the thread that owns the connection
        self._thread.shutdown(wait=True)
