"""The prediction log's group commit, the schema check at start-up, and database outages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url

from serve_app.app import create_app
from serve_app.db import (
    DatabaseUnavailableError,
    PredictionLog,
    UserGoneError,
    create_engine,
    create_session_factory,
)
from serve_app.models import Prediction, User, utcnow
from serve_app.settings import Settings


@pytest.fixture
async def sessions(database_url):
    engine = create_engine(Settings(database_url=database_url))
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def owner(sessions) -> int:
    async with sessions() as session:
        user = User(username=f"owner_{uuid.uuid4().hex[:12]}", hashed_password="x")
        session.add(user)
        await session.commit()
        return user.id


def row(user_id: int, text: str) -> dict:
    return dict(user_id=user_id, text=text, label="neutral", score=0.5, model_version="test@0",
                latency_ms=1.0, created_at=utcnow())


async def committed_texts(sessions, ids: list[int]) -> list[str]:
    """Read through a separate session: only committed rows are visible there."""
    async with sessions() as session:
        return list(await session.scalars(select(Prediction.text).where(Prediction.id.in_(ids))
                                          .order_by(Prediction.id)))


async def test_every_row_of_grouped_multi_row_writes_gets_its_own_id(sessions, owner):
    log = PredictionLog(sessions)
    log.start()
    batches = [[row(owner, f"batch {b} row {r}") for r in range(1 + b % 7)] for b in range(40)]
    all_ids = await asyncio.gather(*(log.write(batch) for batch in batches))
    await log.close()

    assert log.transactions < len(batches)  # the batches shared transactions
    for batch, ids in zip(batches, all_ids, strict=True):
        assert ids == sorted(ids)  # a request's rows are numbered in its texts' order
        assert await committed_texts(sessions, ids) == [r["text"] for r in batch]


async def test_concurrent_writes_share_transactions_and_are_committed_on_return(sessions, owner):
    log = PredictionLog(sessions)
    log.start()
    checks = []

    async def write_and_check(i: int) -> None:
        [written_id] = await log.write([row(owner, f"concurrent {i}")])
        # Seen from another connection at the moment write() returns: it was committed.
        checks.append(await committed_texts(sessions, [written_id]) == [f"concurrent {i}"])

    await asyncio.gather(*(write_and_check(i) for i in range(50)))
    await log.close()

    assert checks == [True] * 50
    assert log.rows_written == 50
    assert log.transactions < 50  # requests were grouped into shared transactions


async def test_a_request_with_several_rows_is_written_in_one_transaction(sessions, owner):
    log = PredictionLog(sessions)
    log.start()
    ids = await log.write([row(owner, f"batch {i}") for i in range(5)])
    await log.close()
    assert log.transactions == 1
    assert await committed_texts(sessions, ids) == [f"batch {i}" for i in range(5)]


async def test_rows_of_a_deleted_user_fail_alone_and_the_rest_of_the_group_commits(sessions, owner):
    log = PredictionLog(sessions)
    log.start()
    missing_user = 2_000_000_000
    results = await asyncio.gather(
        log.write([row(owner, "kept 1")]),
        log.write([row(missing_user, "orphan")]),
        log.write([row(owner, "kept 2")]),
        return_exceptions=True)
    await log.close()

    assert isinstance(results[1], UserGoneError)
    kept = [r[0] for r in (results[0], results[2])]
    assert await committed_texts(sessions, kept) == ["kept 1", "kept 2"]


async def test_close_writes_everything_already_queued(sessions, owner):
    log = PredictionLog(sessions)
    log.start()
    writes = [asyncio.ensure_future(log.write([row(owner, f"queued {i}")])) for i in range(10)]
    await asyncio.sleep(0)  # let them enqueue
    await log.close()
    ids = [(await w)[0] for w in writes]
    assert len(await committed_texts(sessions, ids)) == 10


async def test_writing_to_a_stopped_log_is_refused(sessions, owner):
    log = PredictionLog(sessions)
    with pytest.raises(DatabaseUnavailableError):
        await log.write([row(owner, "nobody is writing")])


async def test_startup_fails_loudly_on_an_unmigrated_database(tmp_path, classify):
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    app = create_app(classify, Settings(database_url=url, secret_key="k" * 40))
    with pytest.raises(RuntimeError, match=r"revision none.*alembic upgrade head"):
        async with app.router.lifespan_context(app):
            pass


# ---- outages ---------------------------------------------------------------------------------


class TcpProxy:
    """Forwards a local port to the database; ``cut()`` drops every connection and refuses new
    ones, ``restore()`` accepts them again on the same port: a database outage on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src, dst):
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    restore = start


@pytest.fixture
async def proxied_database_url(database_url):
    url = make_url(database_url)
    proxy = TcpProxy(url.host, url.port or 3306)
    await proxy.start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    with contextlib.suppress(Exception):
        await proxy.cut()


# A networked database only: an embedded SQLite file cannot become unreachable.
@pytest.mark.mysql
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_database_outage_gives_503_then_recovers_without_restart(
        proxied_database_url, client_with, register):
    proxy, url = proxied_database_url
    async with client_with(database_url=url, db_connect_timeout_seconds=2,
                           prediction_log_timeout_seconds=5) as api:
        someone = await register(api)
        assert (await api.post("/predict", headers=someone.headers, json={"text": "before"})).status_code == 200

        await proxy.cut()
        for method, path, body in [("POST", "/predict", {"text": "during"}),
                                   ("POST", "/predict/batch", {"texts": ["during"]}),
                                   ("GET", "/data", None), ("GET", "/", None)]:
            response = await api.request(method, path, headers=someone.headers, json=body)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["Retry-After"]) >= 1
            assert "database" in response.json()["detail"].lower()
        health = await api.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert health.json()["model"] == "ok" and health.json()["database"] != "ok"
        login = await api.post("/auth/token", data={"username": someone.username,
                                                    "password": someone.password})
        assert login.status_code == 503

        await proxy.restore()
        after = await api.post("/predict", headers=someone.headers, json={"text": "after"})
        assert after.status_code == 200, after.text
        assert (await api.get("/health")).status_code == 200
        texts = [r["text"] for r in (await api.get("/data", headers=someone.headers)).json()]
        assert texts == ["after", "before"]  # nothing answered 503 was reported as logged


@pytest.mark.mysql
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_an_api_key_that_cannot_be_checked_in_an_outage_is_503_never_a_pass(
        proxied_database_url, client_with, register):
    proxy, url = proxied_database_url
    async with client_with(database_url=url, db_connect_timeout_seconds=2,
                           api_key_cache_seconds=0.2) as api:
        someone = await register(api)
        created = await api.post("/auth/keys", headers=someone.headers, json={"name": "k"})
        key = {"X-API-Key": created.json()["key"]}
        assert (await api.get("/", headers=key)).status_code == 200

        await proxy.cut()
        await asyncio.sleep(0.3)  # the replica's cached check has expired
        response = await api.post("/predict", headers=key, json={"text": "during"})
        assert response.status_code == 503, response.text
        assert "database" in response.json()["detail"].lower()

        await proxy.restore()
        after = await api.post("/predict", headers=key, json={"text": "after"})
        assert after.status_code == 200, after.text


async def test_rows_of_a_deleted_user_are_refused_with_401(client, user):
    async with client.app.state.services.sessions() as session:
        await session.execute(delete(User).where(User.id == user.id))
        await session.commit()
        response = await client.post("/predict", headers=user.headers, json={"text": "ghost"})
        assert response.status_code == 401
        count = await session.scalar(select(func.count()).select_from(Prediction)
                                     .where(Prediction.user_id == user.id))
    assert count == 0


async def test_concurrent_http_predictions_share_commits_and_each_answer_is_committed(
        classify, client_with, register):
    requests = 20
    together = asyncio.Barrier(requests)

    async def classify_in_step(texts):
        # The real model, with the answers released at once: the requests then reach the log
        # together, as they do under load.
        predictions = await classify(texts)
        await together.wait()
        return predictions

    async with client_with(classify_fn=classify_in_step) as api:
        someone = await register(api)
        prediction_log = api.app.state.services.prediction_log
        before = prediction_log.transactions
        responses = await asyncio.gather(*(
            api.post("/predict", headers=someone.headers, json={"text": f"request {i}"})
            for i in range(requests)))
        assert [r.status_code for r in responses] == [200] * requests
        assert prediction_log.transactions - before < requests
        ids = [r.json()["id"] for r in responses]
        async with api.app.state.services.sessions() as session:
            texts = set(await session.scalars(select(Prediction.text).where(Prediction.id.in_(ids))))
        assert texts == {f"request {i}" for i in range(requests)}
