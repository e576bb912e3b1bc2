"""A private single-node Ray cluster for tests that must own their cluster.

Fault and upgrade tests deploy with the real `serve deploy` CLI, which declares every
application of a cluster at once, and they kill replica processes: they cannot share a cluster
with tests that rely on a steady application. The head is `bench.ray_cluster.RayCluster`'s
(`ray start --head --block` in a subprocess, on free ports); this adds Serve's HTTP port and
what the tests ask of a running application.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.local_ports import free_port
from bench.ray_cluster import RayCluster


class LocalRayCluster(RayCluster):
    def __init__(self, *, num_cpus: int = 4, env: dict[str, str] | None = None, log_dir: Path):
        super().__init__(log_dir=log_dir, env=env)
        self.num_cpus = num_cpus
        self.serve_port = free_port()

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def start(self, timeout_s: float = 90) -> LocalRayCluster:
        self.start_head(num_cpus=self.num_cpus, timeout_s=timeout_s)
        return self

    def deployment_status(self, app: str, deployment: str) -> dict:
        app_status = (self.serve_status().get("applications") or {}).get(app) or {}
        return (app_status.get("deployments") or {}).get(deployment) or {}

    def wait_for_http(self, path: str = "/health", timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.serve_url + path, timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.serve_url}{path} never answered 200")

    def replica_pids(self, app: str, deployment: str) -> list[int]:
        """PIDs of this cluster's live replica actors of `deployment` (never another cluster's)."""
        return sorted(actor["pid"] for actor in self.replicas(app, deployment) if actor.get("pid"))
