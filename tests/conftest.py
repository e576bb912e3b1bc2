"""Shared fixtures: a real database (SQLite and MariaDB), the real classifier, an app client.

Every test that takes ``client`` (or ``database_url``) runs once per database: on a temporary
SQLite file and on a freshly created, uniquely named MariaDB database, each migrated with
Alembic once per session and dropped at the end. Under ``CI`` a missing MariaDB (or Redis)
fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import pytest
from pathlib import Path
from sqlalchemy.engine import make_url

from serve_app.app import create_app, in_process_classify
from serve_app.db import upgrade_to_head
from serve_app.deps import Classify
from serve_app.settings import Settings

# The shared Ray Serve instances (serve_instance, mysql_serve_instance, start_serve): one per
# session for every test directory that needs one.
pytest_plugins = ["integration.serve_fixtures"]

IN_CI = bool(os.environ.get("CI"))
MYSQL_SERVER_URL = os.environ.get("TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306")
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET_KEY = "test-secret-key-" + "k" * 40
PASSWORD = "correct horse battery"


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail under CI, where every backend must be present."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: this backend is required)")
    pytest.skip(reason)


# ---- the real classifier, loaded once --------------------------------------------------------


@pytest.fixture(scope="session")
def classifier():
    from serve_app.classifier import SentimentClassifier

    return SentimentClassifier.load()


@pytest.fixture(scope="session")
def classify(classifier) -> Classify:
    return in_process_classify(classifier)


# ---- databases -------------------------------------------------------------------------------


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A new, uniquely named database on the local MariaDB server, dropped afterwards."""
    import pymysql

    server = make_url(MYSQL_SERVER_URL)
    name = f"sentiment_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = pymysql.connect(host=server.host, port=server.port or 3306,
                                user=server.username, password=server.password or "",
                                connect_timeout=5)
    except pymysql.err.OperationalError as err:
        unavailable(f"MariaDB not reachable at {server.host}:{server.port}: {err}")
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(scope="session",
                params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'sentiment.db'}"
        upgrade_to_head(url)
        yield url
        return
    with mariadb_database() as url:
        upgrade_to_head(url)
        yield url


def make_settings(database_url: str, **overrides) -> Settings:
    values = dict(database_url=database_url, secret_key=TEST_SECRET_KEY, env="development",
                  redis_url=None)
    values.update(overrides)
    return Settings(**values)


# ---- app and client --------------------------------------------------------------------------


@asynccontextmanager
async def running_client(classify: Classify, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A started app (lifespan run) and an HTTP client speaking to it in process."""
    app = create_app(classify, settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]  # tests reach app.state through it
            yield client


@pytest.fixture
def app_client():
    """`async with app_client(classify, database_url, **settings) as client`: an app of the
    test's own (`settings` as for make_settings)."""
    def start(classify: Classify, database_url: str, **overrides):
        return running_client(classify, make_settings(database_url, **overrides))
    return start


@pytest.fixture(scope="session")
async def client(classify, database_url) -> AsyncIterator[httpx.AsyncClient]:
    """One running app per database, shared by the tests (each test uses its own users)."""
    async with running_client(classify, make_settings(database_url)) as client:
        yield client


@pytest.fixture
def client_with(classify, database_url) -> Callable[..., AsyncIterator[httpx.AsyncClient]]:
    """A client for an app with some settings changed: ``async with client_with(x=1) as c``;
    ``classify=`` swaps the model callable."""

    def start(classify_fn: Classify | None = None, **overrides):
        url = overrides.pop("database_url", database_url)
        return running_client(classify_fn or classify, make_settings(url, **overrides))

    return start


# ---- users -----------------------------------------------------------------------------------


@dataclass
class ApiUser:
    id: int
    username: str
    password: str
    headers: dict[str, str]


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def create_user(client: httpx.AsyncClient, username: str | None = None,
                      password: str = PASSWORD) -> ApiUser:
    username = username or unique_username()
    created = await client.post("/auth/", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    token = await client.post("/auth/token", data={"username": username, "password": password})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return ApiUser(created.json()["id"], username, password, headers)


@pytest.fixture(scope="session")
def register():
    """``await register(client, username=None, password=...)`` -> ApiUser, for any client."""
    return create_user


@pytest.fixture
def new_user(client) -> Callable[..., Awaitable[ApiUser]]:
    return lambda **kwargs: create_user(client, **kwargs)


@pytest.fixture
async def user(client) -> ApiUser:
    return await create_user(client)


@pytest.fixture(scope="session")
def secret_key() -> str:
    """The key the test apps sign tokens with."""
    return TEST_SECRET_KEY


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as err:
        unavailable(f"Redis not reachable at {REDIS_TEST_URL}: {err}")
    return REDIS_TEST_URL


@pytest.fixture
def tiny_hf_dir(tmp_path) -> Path:
    """A tiny random Hugging Face classifier with the packaged tokenizer (tests/unit)."""
    from tiny_models import tiny_hf_model_dir  # beside the unit tests that use it

    return tiny_hf_model_dir(tmp_path)
