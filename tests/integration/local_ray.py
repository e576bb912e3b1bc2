"""A private single-node Ray cluster for tests that must own their cluster.

Fault and upgrade tests deploy with the real `serve deploy` CLI, which declares every
application of a cluster at once, and they kill replica processes: they cannot share a cluster
with tests that rely on a steady application. This starts `ray start --head --block` in a
subprocess on free ports (the machine hosts other clusters), and stopping it ends only that
process tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from deployments.local_ports import free_port
from deployments.ray_auth import dashboard_headers as dashboard_auth_headers
from deployments.ray_auth import ray_process_env

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STOP_GRACE_S = 5  # then the whole process group is killed


class LocalRayCluster:
    def __init__(self, *, num_cpus: int = 4, env: dict[str, str] | None = None, log_dir: Path):
        self.num_cpus = num_cpus
        self.log_dir = log_dir
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.serve_port = free_port()
        self.metrics_export_port = free_port()  # Ray's Prometheus export (scraped in tests)
        self.env = ray_process_env(**(env or {}))
        self._process: subprocess.Popen | None = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def start(self, timeout_s: float = 90) -> "LocalRayCluster":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "--port": self.gcs_port,
            "--dashboard-port": self.dashboard_port,
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": self.metrics_export_port,
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
        }
        command = [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={self.num_cpus}"]
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats"]
        command += [f"{flag}={port}" for flag, port in ports.items()]
        self._log = open(self.log_dir / "ray-start.log", "w")
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.log_dir / 'ray-start.log').read_text()[-3000:]}")
            try:
                if self.serve_cli("status", check=False).returncode == 0:
                    return self
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError("the Ray head did not come up")

    def serve_cli(self, *args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "serve"), *args, f"--address={self.dashboard_url}"],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=check,
        )

    def serve_deploy(self, config: dict, path: Path) -> None:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.serve_cli("deploy", str(path))

    def serve_status(self) -> dict:
        return yaml.safe_load(self.serve_cli("status").stdout) or {}

    def deployment_status(self, app: str, deployment: str) -> dict:
        app_status = (self.serve_status().get("applications") or {}).get(app) or {}
        return (app_status.get("deployments") or {}).get(deployment) or {}

    def wait_until_running(self, app: str, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        while time.monotonic() < deadline:
            status = (self.serve_status().get("applications") or {}).get(app) or {}
            if status.get("status") == "RUNNING":
                return status
            if status.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"{app} failed to deploy: {status}")
            time.sleep(1)
        raise TimeoutError(f"{app} not RUNNING after {timeout_s}s: {status}")

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
        response = httpx.get(
            f"{self.dashboard_url}/api/v0/actors",
            params={"filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE",
                    "limit": 1000},
            headers=dashboard_auth_headers(), timeout=30,
        )
        response.raise_for_status()
        actors = response.json()["data"]["result"]["result"]
        class_name = f"ServeReplica:{app}:{deployment}"
        return sorted(a["pid"] for a in actors if a.get("class_name") == class_name and a.get("pid"))

    def stop(self) -> None:
        """End the `ray start --block` process group: it shuts down its own cluster only."""
        if self._process is None or self._process.poll() is not None:
            return
        # `ray start --block` tears its cluster down on SIGTERM, but waits out every replica's
        # graceful shutdown (~30 s with Serve running); a test cluster holds nothing worth it.
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        finally:
            self._log.close()
