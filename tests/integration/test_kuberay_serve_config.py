"""The serveConfigV2 each KubeRay overlay embeds deploys with `serve deploy`, reaches RUNNING and
answers /health: the config a cluster would run is the one tested here.

The Ray cluster is shaped like the RayService's: a head with no CPUs for Ray (so no replica can
land on it) and a worker node, each a `ray start` process, the app's environment given to the
nodes as the pods get it from the Secret, and the schema migrated first as the head's init
container does. Only what this machine forces differs from the cluster (see `on_this_machine`):
the proxies listen on 127.0.0.1 and a free port instead of 0.0.0.0:80, and for the gpu overlay
the model replicas ask for no GPU and run the model on the CPU (there is no GPU here), and the
database is a local MariaDB database instead of the production MySQL server. Everything else is the overlay's config.
"""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from bench.local_ports import free_port
from bench.ray_cluster import RayCluster
from kuberay_setup import (
    app_environment,
    on_this_machine,
    overlay_serve_config,
    run_migrations,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

APP = "sentiment"
WORKER_CPUS = 4  # logical CPUs for Ray on the worker node; the machine has 2 cores


def mariadb_url(name: str) -> str:
    import pymysql

    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                connect_timeout=5, autocommit=True)
    except pymysql.err.OperationalError as err:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required under CI: {err}")
        pytest.skip(f"MariaDB not reachable: {err}")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    admin.close()
    return f"mysql+aiomysql://root@127.0.0.1:3306/{name}"


def drop_mariadb(name: str) -> None:
    import pymysql

    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sentiment.db'}"
        return
    name = f"sentiment_kuberay_{uuid.uuid4().hex[:10]}"
    url = mariadb_url(name)
    try:
        yield url
    finally:
        drop_mariadb(name)


@pytest.mark.parametrize(
    "overlay, database_url",
    [("cpu", "sqlite"), pytest.param("gpu", "mariadb", marks=pytest.mark.mysql)],
    indirect=["database_url"],
)
def test_overlay_serve_config_deploys_runs_and_answers_health(overlay, database_url, tmp_path):
    cluster_config = overlay_serve_config(overlay)
    serve_port = free_port()
    config = on_this_machine(cluster_config, serve_port=serve_port, without_gpus=overlay == "gpu")

    env = app_environment(database_url)
    cluster = RayCluster(log_dir=tmp_path / "ray", env=env)
    run_migrations(cluster.env)
    try:
        cluster.start_head(num_cpus=0)
        cluster.add_worker(num_cpus=WORKER_CPUS)
        cluster.serve_deploy(config, tmp_path / f"{overlay}.yaml")
        status = cluster.wait_until_running(APP)
        assert {name for name, d in status["deployments"].items() if d["status"] == "HEALTHY"} == {
            "APIIngress", "SentimentModel"}

        response = httpx.get(f"http://127.0.0.1:{serve_port}/health", timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "healthy"
        assert body["model_version"]

        # No model replica runs on the head (num-cpus 0), as on the RayService's head pod.
        head = cluster.head_node_id()
        replicas = cluster.replicas(APP, "SentimentModel")
        assert replicas and all(r["node_id"] != head for r in replicas)
    finally:
        cluster.stop()
