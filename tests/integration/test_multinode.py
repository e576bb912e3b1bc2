"""The service on a multi-node Ray cluster: a head that runs no replicas (num-cpus 0, as the
RayService's head pod) and two worker nodes, each a separate `ray start` process. The model
replicas run on the worker nodes, one on each, and requests through the Serve proxy are answered
by them and logged.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.local_ports import free_port
from bench.ray_cluster import RayCluster
from kuberay_setup import (
    app_environment,
    on_this_machine,
    overlay_serve_config,
    run_migrations,
    sign_up_and_log_in,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

APP = "sentiment"
MODEL = "SentimentModel"
INGRESS = "APIIngress"
SENTENCES = {
    "I absolutely love this, it is wonderful and works perfectly.": "positive",
    "This is terrible, the worst purchase I have ever made.": "negative",
}


def two_fixed_model_replicas(config: dict) -> dict:
    """The cpu overlay's config with exactly two model replicas of one CPU each."""
    (app,) = [a for a in config["applications"] if a["name"] == APP]
    (model,) = [d for d in app["deployments"] if d["name"] == MODEL]
    model.pop("autoscaling_config", None)
    model["num_replicas"] = 2
    model.setdefault("ray_actor_options", {})["num_cpus"] = 1
    return config


async def predict_all(base_url: str, token: str, rounds: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        calls = [client.post("/predict", json={"text": text})
                 for _ in range(rounds) for text in SENTENCES]
        return await asyncio.gather(*calls)


def test_model_replicas_run_on_worker_nodes_and_serve_requests(tmp_path):
    serve_port = free_port()
    config = two_fixed_model_replicas(
        on_this_machine(overlay_serve_config("cpu"), serve_port=serve_port))
    cluster = RayCluster(
        log_dir=tmp_path / "ray",
        env=app_environment(f"sqlite+aiosqlite:///{tmp_path / 'sentiment.db'}"))
    run_migrations(cluster.env)
    try:
        cluster.start_head(num_cpus=0)
        cluster.add_worker(num_cpus=2)
        cluster.add_worker(num_cpus=2)
        head = cluster.head_node_id()
        workers = {n["node_id"] for n in cluster.alive_nodes()} - {head}
        assert len(workers) == 2

        cluster.serve_deploy(config, tmp_path / "multinode.yaml")
        cluster.wait_until_running(APP)

        model_nodes = [r["node_id"] for r in cluster.replicas(APP, MODEL)]
        ingress_nodes = [r["node_id"] for r in cluster.replicas(APP, INGRESS)]
        print(f"head {head[:8]}; workers {[w[:8] for w in workers]}")
        print(f"model replicas on {[n[:8] for n in model_nodes]}; ingress on {[n[:8] for n in ingress_nodes]}")
        assert len(model_nodes) == 2
        assert set(model_nodes) == workers, "one model replica per worker node, none on the head"

        base_url = f"http://127.0.0.1:{serve_port}"
        token = sign_up_and_log_in(base_url, "multinode_user")
        responses = asyncio.run(predict_all(base_url, token, rounds=10))
        assert [r.status_code for r in responses] == [200] * len(responses)
        for response in responses:
            body = response.json()
            assert body["label"] == SENTENCES[body["text"]], body

        data = httpx.get(f"{base_url}/data", params={"limit": 500},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert data.status_code == 200
        assert len(data.json()) == len(responses), "every answered prediction is logged"
    finally:
        cluster.stop()
