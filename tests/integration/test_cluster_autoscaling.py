"""Cluster autoscaling end to end, on Ray's fake multi-node autoscaler.

The cluster is shaped like the RayService's: a head with no CPUs for Ray and a worker group
(`cpu_worker`, min 1, max 2 nodes of 2 CPUs) scaled by Ray's autoscaler. One worker node holds
the ingress replica and one model replica; under load Serve's autoscaling asks for a second
model replica that no node can hold, the autoscaler adds a node, the replica runs there, and
after the load Serve removes it and the autoscaler removes the idle node. The timeline of
replicas and nodes is printed.

`ray.cluster_utils.AutoscalingCluster` is the tool for this, but its `start()` and `shutdown()`
run `ray stop --force` (which would end every Ray cluster on this shared machine), its head
takes the default GCS port 6379 (Redis listens there), and its config template is not shipped
in the wheel. So the same mechanism runs here under our control: a head started with
`--autoscaling-config` and `RAY_FAKE_CLUSTER=1`, whose monitor launches and terminates worker
nodes through the fake multi-node node provider, on free ports, in a process group we own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

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
WORKER_TYPE = "cpu_worker"
WORKER_CPUS = 2
CONCURRENCY = 12
IDLE_TIMEOUT_MINUTES = 0.2  # the autoscaler removes a node idle for 12 s


def fake_cluster_config(gcs_address: str) -> dict:
    """An autoscaler config for the fake multi-node provider (the shape of Ray's example)."""
    return {
        "cluster_name": "sentiment-fake",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": WORKER_CPUS, "object_store_memory": 200 * 1024 * 1024},
                "node_config": {}, "min_workers": 1, "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def autoscaling_test_config(config: dict) -> dict:
    """The cpu overlay's config with placement made explicit and Serve's autoscaling quick:
    one ingress replica (1 CPU) and 1-2 model replicas (1 CPU each), so two model replicas and
    the ingress cannot all fit on one 2-CPU worker node."""
    (app,) = [a for a in config["applications"] if a["name"] == APP]
    deployments = {d["name"]: d for d in app["deployments"]}
    ingress, model = deployments[INGRESS], deployments[MODEL]
    ingress.pop("autoscaling_config", None)
    ingress["num_replicas"] = 1
    ingress.setdefault("ray_actor_options", {})["num_cpus"] = 1
    model.pop("num_replicas", None)
    model.setdefault("ray_actor_options", {})["num_cpus"] = 1
    model["autoscaling_config"] = {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 2,
        "target_ongoing_requests": 2, "look_back_period_s": 3,
        "upscale_delay_s": 1, "downscale_delay_s": 4,
    }
    return config


class Load:
    """Closed-loop /predict traffic from a background thread until stopped."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client_loop(self, client: httpx.AsyncClient, n: int) -> None:
        while not self._stop.is_set():
            try:
                response = await client.post("/predict", json={"text": f"load sentence {n} {time.time()}"})
                self.statuses.append(response.status_code)
            except httpx.HTTPError:
                self.statuses.append(0)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60) as client:
            await asyncio.gather(*(self._client_loop(client, n) for n in range(CONCURRENCY)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def snapshot(cluster: RayCluster, start: float, phase: str) -> dict:
    head = cluster.head_node_id()
    workers = sorted(n["node_id"] for n in cluster.alive_nodes() if n["node_id"] != head)
    model_nodes = sorted(r["node_id"] for r in cluster.replicas(APP, MODEL))
    return {"t": round(time.monotonic() - start, 1), "phase": phase, "workers": workers,
            "model_replica_nodes": model_nodes}


def print_timeline(timeline: list[dict]) -> None:
    """One line per change of phase, worker nodes or model replicas (sampled every ~1 s)."""
    names: dict[str, str] = {}

    def short(node_id: str) -> str:
        return names.setdefault(node_id, f"w{len(names) + 1}")

    print("\n   t(s)  phase   worker nodes    model replicas on")
    previous = None
    for row in timeline:
        state = (row["phase"], tuple(row["workers"]), tuple(row["model_replica_nodes"]))
        if state == previous:
            continue
        previous = state
        workers = ",".join(short(w) for w in row["workers"])
        replicas = ",".join(short(n) for n in row["model_replica_nodes"])
        print(f"{row['t']:7.1f}  {row['phase']:<6}  {len(row['workers'])} [{workers:<9}]   "
              f"{len(row['model_replica_nodes'])} [{replicas}]")


def wait_for(cluster, start, phase, timeline, condition, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = snapshot(cluster, start, phase)
        timeline.append(row)
        if condition(row):
            return row
        time.sleep(1)
    print_timeline(timeline)
    raise TimeoutError(f"{phase}: condition not met within {timeout_s}s")


def test_load_adds_a_node_for_a_model_replica_and_idle_removes_it(tmp_path):
    serve_port = free_port()
    config = autoscaling_test_config(
        on_this_machine(overlay_serve_config("cpu"), serve_port=serve_port))
    env = app_environment(f"sqlite+aiosqlite:///{tmp_path / 'sentiment.db'}")
    # Serve reports load to its controller every 10 s by default; 1 s keeps the test short.
    env["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    env["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    cluster = RayCluster(log_dir=tmp_path / "ray", env=env)
    run_migrations(cluster.env)
    autoscaling_config = tmp_path / "autoscaler.json"
    autoscaling_config.write_text(json.dumps(fake_cluster_config(cluster.gcs_address)))
    timeline: list[dict] = []
    try:
        cluster.start_head(num_cpus=0, args=[f"--autoscaling-config={autoscaling_config}"],
                           extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        start = time.monotonic()
        # min_workers: 1 -> the autoscaler brings up the first worker node by itself.
        wait_for(cluster, start, "start", timeline, lambda r: len(r["workers"]) == 1, 120)

        cluster.serve_deploy(config, tmp_path / "autoscaling.yaml")
        cluster.wait_until_running(APP)
        before = wait_for(cluster, start, "idle", timeline,
                          lambda r: len(r["model_replica_nodes"]) == 1, 60)
        (first_worker,) = before["workers"]
        assert before["model_replica_nodes"] == [first_worker]

        base_url = f"http://127.0.0.1:{serve_port}"
        load = Load(base_url, sign_up_and_log_in(base_url, "autoscaling_user"))
        load.start()
        try:
            peak = wait_for(cluster, start, "load", timeline,
                            lambda r: len(r["workers"]) == 2 and len(r["model_replica_nodes"]) == 2,
                            240)
        finally:
            load.stop()
        (new_worker,) = set(peak["workers"]) - {first_worker}
        assert sorted(peak["model_replica_nodes"]) == sorted([first_worker, new_worker]), \
            "the second model replica runs on the node the autoscaler added"

        after = wait_for(cluster, start, "drain", timeline,
                         lambda r: len(r["workers"]) == 1 and len(r["model_replica_nodes"]) == 1,
                         240)
        print_timeline(timeline)
        assert after["workers"] == [first_worker]
        assert load.statuses and set(load.statuses) == {200}, \
            f"{len(load.statuses)} requests, statuses {sorted(set(load.statuses))}"
        print(f"load: {len(load.statuses)} requests, all 200")
    finally:
        cluster.stop()
