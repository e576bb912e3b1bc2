"""Async engine and sessions, the schema-revision check, and the group-commit prediction log.

Nothing here runs at import time: the app's lifespan creates the engine and the log inside the
running process (a Ray replica, a test's event loop), so no connection crosses a fork or loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from serve_app.db_pool import FairAsyncQueuePool
from serve_app.models import Prediction
from serve_app.settings import Settings
from serve_app.sqlite_writer import SqliteThreadWriter, apply_sqlite_pragmas, sqlite_file_url
from serve_app.tracing import traced
from serve_app.write_path import DatabaseBusyError, WritePath

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Errors that mean "the database cannot be reached right now", as opposed to a bad query.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,  # pool exhausted (answered as busy: see is_busy)
)


def is_busy(err: BaseException) -> bool:
    """The database answers but is over its bound: every pooled connection stayed in use past
    the pool timeout, or SQLite's write lock stayed taken past the busy timeout."""
    if isinstance(err, exc.TimeoutError):
        return True
    return isinstance(err, exc.OperationalError) and "database is locked" in str(err.orig)


class DatabaseUnavailableError(RuntimeError):
    """The database did not take a write or a read; the client should retry later."""


class UserGoneError(RuntimeError):
    """A row referred to a user that no longer exists (a token outlived its account)."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    if is_sqlite(url):
        # Writes queue on the WritePath first; SQLite's own busy wait is only the backstop for
        # writers outside this service (migrations, scripts), bounded like the path.
        engine = create_async_engine(url, connect_args={"timeout": settings.db_write_wait_seconds})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            apply_sqlite_pragmas(dbapi_conn, settings.db_write_wait_seconds)

        return engine
    connect_args: dict[str, Any] = {"connect_timeout": settings.db_connect_timeout_seconds}
    if "charset" not in make_url(url).query:
        connect_args["charset"] = "utf8mb4"
    return create_async_engine(
        url,
        poolclass=FairAsyncQueuePool,  # waits for a connection are served first come, first served
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def create_write_path(settings: Settings) -> WritePath:
    return WritePath.for_url(settings.database_url, max_wait_s=settings.db_write_wait_seconds)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


# ---- schema revision ---------------------------------------------------------------------------


def alembic_config(database_url: str | None = None):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        cfg.attributes["database_url"] = database_url
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_to_head(database_url: str) -> None:
    """Apply every migration (synchronous; call it from a thread inside an event loop)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def check_schema_at_head(engine: AsyncEngine) -> None:
    """Refuse to serve on a database whose schema is not the one this code expects."""
    expected = head_revision()
    found = await current_revision(engine)
    if found != expected:
        raise RuntimeError(
            f"database {safe_url(str(engine.url))} is at schema revision {found or 'none'}, "
            f"this code needs {expected}. Run `make migrate` (or "
            f"`DATABASE_URL=... .venv/bin/alembic upgrade head`) and start again."
        )


# ---- prediction log: group commit --------------------------------------------------------------


_INSERT_RETURNING_ID = insert(Prediction).returning(Prediction.id, sort_by_parameter_order=True)
# SQLAlchemy has no implicit sentinel for SQLite: asked to keep the rows' order there, it sends
# one INSERT (and one thread hop of aiosqlite) per row. SQLite numbers the rows of one INSERT in
# VALUES order (each new rowid is the largest so far + 1), so one multi-row INSERT and its ids
# sorted give every row its id.
_INSERT_RETURNING_ID_UNORDERED = insert(Prediction).returning(Prediction.id)


@dataclass
class _Pending:
    rows: list[dict[str, Any]]  # column values of each Prediction row
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ids: list[int] = field(default_factory=list)  # of the rows, once committed


class PredictionLog:
    """Writes prediction rows with group commit.

    Requests that arrive while a transaction is being committed queue up and are written
    together in the next transaction; every caller waits until the transaction holding its
    own rows has committed, so a response never reports a row that could still be lost.
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], *, max_batch: int = 512,
                 timeout_s: float = 15.0, writes: WritePath | None = None,
                 on_commit: Callable[[int, float], None] | None = None) -> None:
        self._session_factory = session_factory
        # The one ordered path of every write on SQLite (sign-ups wait their turn beside us).
        self._writes = writes or WritePath(sqlite=False, sqlite_file=None, max_wait_s=timeout_s)
        # Called with (rows, seconds) after each committed transaction: a metrics hook.
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        # A SQLite file is written from a thread of the log's own (one hop per commit).
        engine = session_factory.kw.get("bind")
        sqlite_url = sqlite_file_url(engine.url) if engine is not None else None
        self._sqlite = sqlite_url and SqliteThreadWriter(
            sqlite_url, busy_timeout_s=self._writes.max_wait_s)
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # committed transactions, for tests and metrics
        self.rows_written = 0

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def close(self) -> None:
        """Write everything queued, then stop."""
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._sqlite:
            await asyncio.to_thread(self._sqlite.close)
            self._sqlite = None

    @traced("prediction_log.commit")
    async def write(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Queue rows (column values) for the next transaction; their ids once committed."""
        if self._writer is None or self._writer.done():
            raise DatabaseUnavailableError("prediction log is not running")
        pending = _Pending(list(rows))
        await self._queue.put(pending)
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(pending.done)
        except TimeoutError as err:
            raise DatabaseUnavailableError("the database did not commit in time") from err
        return pending.ids

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            group = [first]
            count = len(first.rows)
            while count < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                group.append(item)
                count += len(item.rows)
            await self._commit_group(group)

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            await self._commit(group)
        except exc.IntegrityError:
            # One request's rows broke a constraint (its user was deleted): commit each request
            # on its own so the others are not failed with it.
            if len(group) > 1:
                for pending in group:
                    await self._commit_group([pending])
                return
            _settle(group, lambda: UserGoneError("the user of this request no longer exists"))
        except DatabaseBusyError as err:
            log.warning("prediction log: database busy: %s", err)
            _settle(group, lambda: DatabaseBusyError(retry_after=err.retry_after))
        except UNAVAILABLE_ERRORS as err:
            if is_busy(err):
                log.warning("prediction log: database busy: %s", err)
                retry_after = self._writes.retry_after()
                _settle(group, lambda: DatabaseBusyError(retry_after=retry_after))
            else:
                log.warning("prediction log: database unavailable: %s", err)
                _settle(group, lambda: DatabaseUnavailableError("the database is unavailable"))
        except Exception as err:  # keep the writer alive whatever happens to one transaction
            log.exception("prediction log: transaction failed")
            why = f"the prediction log failed: {type(err).__name__}"
            _settle(group, lambda: DatabaseUnavailableError(why))
        else:
            _settle(group, None)

    async def _commit(self, group: list[_Pending]) -> None:
        # One multi-row INSERT ... RETURNING id (SQLite >= 3.35, MariaDB >= 10.5) through Core:
        # no ORM object or ORM bulk bookkeeping per row.
        values = [row for pending in group for row in pending.rows]
        async with self._writes.turn():
            started = time.perf_counter()
            if self._sqlite:
                ids = await self._sqlite.run(
                    lambda conn: sorted(conn.execute(_INSERT_RETURNING_ID_UNORDERED, values).scalars()))
            else:
                async with self._session_factory() as session:
                    conn = await session.connection()
                    ids = list((await conn.execute(_INSERT_RETURNING_ID, values)).scalars())
                    await session.commit()
            seconds = time.perf_counter() - started
        offset = 0
        for pending in group:
            pending.ids = ids[offset : offset + len(pending.rows)]
            offset += len(pending.rows)
        count = len(values)
        self.transactions += 1
        self.rows_written += count
        if self._on_commit is not None:
            try:
                self._on_commit(count, seconds)
            except Exception:  # a metrics hook must never fail a committed write
                log.exception("prediction log: on_commit hook failed")


def _settle(group: list[_Pending], error: Callable[[], BaseException] | None) -> None:
    for pending in group:
        if pending.done.done():
            continue
        if error is None:
            pending.done.set_result(None)
        else:
            # A fresh exception per waiter: one instance raised in many tasks tangles tracebacks.
            pending.done.set_exception(error())
