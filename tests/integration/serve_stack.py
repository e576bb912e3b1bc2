"""A real sentiment-serve instance for tests: private Ray cluster, real config, own database.

`start_serve()` starts a single-node Ray cluster on free ports (`local_ray.LocalRayCluster`:
`ray start --head --block` in a subprocess this process owns), migrates a fresh database
(a temporary SQLite file, or a new uniquely named MariaDB database), and deploys the
`sentiment` application from the real `serve_config.yaml` with the real `serve deploy` CLI,
with only the changes a test asks for. Leaving the context tears down that cluster alone
(never `ray stop`) and drops the database.

The fixtures in `conftest.py` share instances across tests; import this module directly
where a fixture cannot reach (e.g. from another test directory).
"""

from __future__ import annotations

import copy
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_ray import LocalRayCluster  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO_ROOT / "serve_config.yaml"
APP_NAME = "sentiment"
MODEL = "SentimentModel"
INGRESS = "APIIngress"
MYSQL_SERVER = {
    "host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("MYSQL_PORT", "3306")),
    "user": os.environ.get("MYSQL_USER", "root"),
    "password": os.environ.get("MYSQL_PASSWORD", ""),
}
PASSWORD = "correct horse battery staple"

os.environ.setdefault("RAY_AUTH_MODE", "token")  # this process may connect as a Ray driver


class BackendUnavailable(RuntimeError):
    """A database server the test needs is not reachable."""


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_config(
    *,
    port: int,
    env: dict[str, str],
    deployments: dict[str, dict] | None = None,
    source: Path = SERVE_CONFIG,
) -> dict[str, Any]:
    """`source` with the HTTP port, extra env vars and per-deployment overrides applied."""
    config = yaml.safe_load(source.read_text())
    config["http_options"] = {**(config.get("http_options") or {}),
                              "host": "127.0.0.1", "port": port}
    app = next(a for a in config["applications"] if a["name"] == APP_NAME)
    runtime_env = app.setdefault("runtime_env", {})
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
    entries = {d["name"]: d for d in app.setdefault("deployments", [])}
    for name, override in (deployments or {}).items():
        if name in entries:
            entries[name].update(deep_merge(entries[name], override))
        else:
            app["deployments"].append({"name": name, **override})
    return config


def _mysql_connect(database: str | None = None):
    import pymysql

    try:
        return pymysql.connect(**MYSQL_SERVER, database=database, autocommit=True,
                               connect_timeout=5)
    except pymysql.MySQLError as exc:
        raise BackendUnavailable(
            f"MariaDB not reachable at {MYSQL_SERVER['host']}:{MYSQL_SERVER['port']}: {exc}"
        ) from exc


def check_mysql() -> None:
    """Raise BackendUnavailable unless the MariaDB server answers."""
    _mysql_connect().close()


@contextmanager
def fresh_database(kind: str, workdir: Path) -> Iterator[str]:
    """A migrated, empty database of `kind` ("sqlite" or "mysql"); yields its async URL."""
    from serve_app.db import upgrade_to_head

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'sentiment.db'}"
        upgrade_to_head(url)
        yield url
        return
    if kind != "mysql":
        raise ValueError(f"unknown database kind {kind!r}")
    name = f"sentiment_it_{uuid.uuid4().hex[:10]}"
    with _mysql_connect() as conn:
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        password = f":{MYSQL_SERVER['password']}" if MYSQL_SERVER["password"] else ""
        url = (f"mysql+aiomysql://{MYSQL_SERVER['user']}{password}@"
               f"{MYSQL_SERVER['host']}:{MYSQL_SERVER['port']}/{name}")
        upgrade_to_head(url)
        yield url
    finally:
        with _mysql_connect() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def sync_url(async_url: str) -> str:
    """The same database through a synchronous driver, for checks made beside the service."""
    return (async_url.replace("sqlite+aiosqlite://", "sqlite://")
            .replace("mysql+aiomysql://", "mysql+pymysql://"))


@dataclass
class ServeInstance:
    cluster: LocalRayCluster
    database: str  # "sqlite" or "mysql"
    database_url: str
    config: dict[str, Any]
    workdir: Path
    _deploys: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        return self.cluster.serve_url

    @property
    def dashboard_url(self) -> str:
        return self.cluster.dashboard_url

    @property
    def gcs_address(self) -> str:
        return self.cluster.gcs_address

    def deploy(self, config: dict[str, Any] | None = None, *, timeout_s: float = 240) -> None:
        """`serve deploy` `config` (default: the current one) and wait until it runs."""
        if config is not None:
            self.config = config
        self._deploys += 1
        self.cluster.serve_deploy(self.config, self.workdir / f"serve-config-{self._deploys}.yaml")
        self.cluster.wait_until_running(APP_NAME, timeout_s=timeout_s)
        self.cluster.wait_for_http("/health", timeout_s=timeout_s)

    @contextmanager
    def driver(self) -> Iterator[None]:
        """Connect this process to the cluster as a Ray driver (for serve.status, handles)."""
        import ray

        from ray.serve import context

        ray.init(address=self.gcs_address, log_to_driver=False, logging_level="ERROR")
        try:
            yield
        finally:
            context._set_global_client(None)  # the controller client belongs to this session
            ray.shutdown()

    def model_replica_count(self) -> int:
        """RUNNING SentimentModel replicas as `serve.status()` reports them (needs driver())."""
        from ray import serve

        app = serve.status().applications[APP_NAME]
        return app.deployments[MODEL].replica_states.get("RUNNING", 0)

    def model_stats(self, probes: int = 12) -> dict[str, dict]:
        """`SentimentModel.stats()` of every replica the handle reaches, by replica id.

        Blocking (needs driver()); from async code run it in a thread.
        """
        from ray import serve

        handle = serve.get_deployment_handle(MODEL, app_name=APP_NAME).options(
            method_name="stats")
        found: dict[str, dict] = {}
        try:
            for _ in range(probes):
                stats = handle.remote().result(timeout_s=60)
                found[stats["replica_id"]] = stats
        finally:
            # A live handle keeps pushing metrics; after ray.shutdown() that would make Ray
            # auto-connect this process to whichever cluster it finds.
            handle.shutdown()
        return found

    def client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)


@contextmanager
def start_serve(
    *,
    deployments: dict[str, dict] | None = None,
    env: dict[str, str] | None = None,
    cluster_env: dict[str, str] | None = None,
    database: str = "sqlite",
    num_cpus: int = 2,
    source: Path = SERVE_CONFIG,
    workdir: Path | None = None,
) -> Iterator[ServeInstance]:
    """Start a private cluster and deploy `source` on it with these overrides.

    `deployments` maps a deployment name to options deep-merged into its config entry
    (e.g. `{"SentimentModel": {"autoscaling_config": {"upscale_delay_s": 1}}}`); `env` adds
    application env vars (a fixed SECRET_KEY is always set, so tokens work on every ingress
    replica); `cluster_env` goes to the Ray processes themselves (e.g. Serve's own
    RAY_SERVE_* switches, read by the controller and proxies). Raises BackendUnavailable when `database="mysql"` and MariaDB is unreachable.
    """
    with tempfile.TemporaryDirectory(prefix="sentiment-it-", dir=workdir) as tmp:
        tmp_path = Path(tmp)
        with fresh_database(database, tmp_path) as database_url:
            cluster = LocalRayCluster(num_cpus=num_cpus, env=cluster_env,
                                      log_dir=tmp_path / "logs")
            app_env = {"DATABASE_URL": database_url, "SECRET_KEY": secrets.token_urlsafe(48),
                       **(env or {})}
            config = build_config(port=cluster.serve_port, env=app_env,
                                  deployments=deployments, source=source)
            cluster.start()
            try:
                instance = ServeInstance(cluster=cluster, database=database,
                                         database_url=database_url, config=config,
                                         workdir=tmp_path)
                instance.deploy()
                yield instance
            finally:
                cluster.stop()


# ---- HTTP helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiUser:
    id: int
    username: str
    headers: dict[str, str]


async def signup_and_login(client: httpx.AsyncClient, prefix: str = "user") -> ApiUser:
    """A new user through the real API: POST /auth/, then POST /auth/token."""
    username = f"{prefix}_{uuid.uuid4().hex[:10]}"
    created = await client.post("/auth/", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    token = await client.post("/auth/token", data={"username": username, "password": PASSWORD})
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "bearer"
    return ApiUser(id=created.json()["id"], username=username,
                   headers={"Authorization": f"Bearer {body['access_token']}"})
