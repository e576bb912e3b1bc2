"""A Ray cluster of separate `ray start --block` processes: a head and worker nodes, as on KubeRay.

Each node is a subprocess in its own process group, on free ports (the machine hosts other
clusters, and Redis holds Ray's default port 6379). Stopping the cluster ends those process
groups only, never anyone else's Ray. Fake autoscaler nodes are started by the head's monitor
process and so live in the head's process group; they end with it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from local_ray import (
    BIN,
    REPO_ROOT,
    STOP_GRACE_S,
    dashboard_auth_headers,
    free_port,
    ray_process_env,
)


def app_environment(database_url: str) -> dict[str, str]:
    """What a KubeRay pod's environment gives the app (the Secret plus the pod's env)."""
    return {
        "ENV": "production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": secrets.token_hex(32),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def run_migrations(env: dict[str, str]) -> None:
    """`alembic upgrade head`, as the head pod's init container runs it."""
    subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"], cwd=REPO_ROOT, env=env, check=True,
        capture_output=True, text=True, timeout=120,
    )


class RayNodeProcesses:
    def __init__(self, *, log_dir: Path, env: dict[str, str] | None = None):
        self.log_dir = log_dir
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.env = ray_process_env(**(env or {}))
        self._processes: list[subprocess.Popen] = []
        self._logs: list[Any] = []

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_ports(self) -> list[str]:
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--metrics-export-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        return [f"{flag}={port}" for flag, port in ports.items()]

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "w")
        self._logs.append(log)
        command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args]
        self._processes.append(subprocess.Popen(
            command, cwd=REPO_ROOT, env={**self.env, **(extra_env or {})}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def start_head(self, *, num_cpus: int = 0, args: list[str] = (), extra_env=None,
                   timeout_s: float = 90) -> RayNodeProcesses:
        """The head, with `num_cpus` 0 by default: like KubeRay's head, it runs no replicas."""
        self._spawn("head", [
            "--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
            *self._node_ports(), *args,
        ], extra_env)
        self.wait_for_nodes(1, timeout_s)
        return self

    def add_worker(self, *, num_cpus: int, timeout_s: float = 60) -> None:
        count = len(self.alive_nodes())
        self._spawn(f"worker-{len(self._processes)}", [
            f"--address={self.gcs_address}", f"--num-cpus={num_cpus}", *self._node_ports(),
        ])
        self.wait_for_nodes(count + 1, timeout_s)

    def wait_for_nodes(self, count: int, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    logs = "\n".join(p.read_text()[-2000:] for p in self.log_dir.glob("*.log"))
                    raise RuntimeError(f"a `ray start` process exited:\n{logs}")
            try:
                nodes = self.alive_nodes()
                if len(nodes) >= count:
                    return nodes
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"fewer than {count} Ray nodes after {timeout_s}s")

    # --- the dashboard's state API (token auth, as every Ray 2.60 cluster) -----------------

    def _state(self, resource: str, **filters: str) -> list[dict]:
        params: dict[str, Any] = {"limit": 10000, "detail": "true"}
        if filters:
            params["filter_keys"] = list(filters)
            params["filter_predicates"] = ["="] * len(filters)
            params["filter_values"] = list(filters.values())
        response = httpx.get(f"{self.dashboard_url}/api/v0/{resource}", params=params,
                             headers=dashboard_auth_headers(), timeout=30)
        response.raise_for_status()
        return response.json()["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return self._state("nodes", state="ALIVE")

    def head_node_id(self) -> str:
        (head,) = [node for node in self.alive_nodes() if node["is_head_node"]]
        return head["node_id"]

    def replicas(self, app: str, deployment: str) -> list[dict]:
        """Live replica actors of `deployment` (each with its `node_id` and `pid`)."""
        return self._state("actors", state="ALIVE", class_name=f"ServeReplica:{app}:{deployment}")

    # --- Serve CLI ------------------------------------------------------------------------

    def serve_cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "serve"), *args, f"--address={self.dashboard_url}"], cwd=REPO_ROOT,
            env=self.env, capture_output=True, text=True, timeout=timeout_s, check=True,
        )

    def serve_deploy(self, config: dict, path: Path) -> None:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.serve_cli("deploy", str(path))

    def wait_until_running(self, app: str, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        while time.monotonic() < deadline:
            status = (yaml.safe_load(self.serve_cli("status").stdout) or {}).get("applications", {})
            status = status.get(app) or {}
            if status.get("status") == "RUNNING":
                return status
            if status.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"{app} failed to deploy: {status}")
            time.sleep(1)
        raise TimeoutError(f"{app} not RUNNING after {timeout_s}s: {status}")

    def stop(self) -> None:
        """SIGTERM each node's process group (then SIGKILL what is left), workers first."""
        for process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            try:  # fake autoscaler nodes may outlive the `ray start` process in its group
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.poll()
        for log in self._logs:
            log.close()


# --- the serveConfigV2 a KubeRay cluster would run ----------------------------------------


def overlay_serve_config(overlay: str) -> dict:
    """The `serveConfigV2` of `kubectl kustomize kuberay/overlays/<overlay>`, parsed."""
    import shutil

    import pytest

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed")
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "kuberay" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    (service,) = [d for d in yaml.safe_load_all(built) if d and d["kind"] == "RayService"]
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def on_this_machine(config: dict, *, serve_port: int, without_gpus: bool = False) -> dict:
    """The cluster's Serve config with only what this machine forces changed.

    The proxies listen on 127.0.0.1 and a free port instead of 0.0.0.0:80 (privileged, and
    the machine is shared); with `without_gpus`, replicas ask for no GPU and the model runs on
    the CPU (there is no GPU here).
    """
    config = yaml.safe_load(yaml.safe_dump(config))
    config["http_options"].update(host="127.0.0.1", port=serve_port)
    if without_gpus:
        for app in config["applications"]:
            for deployment in app.get("deployments", []):
                options = deployment.get("ray_actor_options") or {}
                if options.get("num_gpus"):
                    options["num_gpus"] = 0
                if (deployment.get("user_config") or {}).get("device") == "cuda":
                    deployment["user_config"]["device"] = "cpu"
    return config


def sign_up_and_log_in(base_url: str, username: str, password: str = "correct horse battery") -> str:
    """A bearer token for a new user, through the public API."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        client.post("/auth/", json={"username": username, "password": password}).raise_for_status()
        response = client.post("/auth/token", data={"username": username, "password": password})
        response.raise_for_status()
        return response.json()["access_token"]
