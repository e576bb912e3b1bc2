"""A private Ray cluster of `ray start --block` processes: a head and, if asked, worker nodes.

The benchmarks and the integration tests each need clusters of their own: the machine hosts
other clusters, and Redis holds Ray's default port 6379, so every port is picked free. It lives
in `bench`, which the tests import (they are not a package, and `deployments` ships in the
image). Each node is a subprocess in its own process group; stopping the cluster ends those
groups only, never anyone else's Ray. Fake autoscaler nodes are started by the head's monitor
process and so live in the head's process group; they end with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from bench.local_ports import free_port
from bench.ray_auth import dashboard_headers, ray_process_env

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_SERVE_ENV_FILE = REPO_ROOT / "configs" / "ray-serve.env"


def shipped_ray_env(path: Path = RAY_SERVE_ENV_FILE) -> dict[str, str]:
    """The Ray processes' switches as `make run` passes them: the file, unless the
    environment already sets a name (as in the Makefile)."""
    shipped = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            shipped[name.strip()] = os.environ.get(name.strip(), value.strip())
    return shipped


def node_ports_env() -> dict[str, str]:
    """Ports every node of a Ray cluster binds besides Ray's own (HAProxy's stats and metrics,
    Serve's fallback proxy): fixed by default, so nodes sharing this machine get free ones."""
    names = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
             "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
    # Nodes of one cluster on one machine share the Serve port, as HAProxies on separate
    # machines would (Serve's Python proxy reuses the port by default, HAProxy only if asked).
    return {name: str(free_port()) for name in names} | {"SERVE_SOCKET_REUSE_PORT_ENABLED": "1"}


class RayCluster:
    """Nodes started from this checkout; `env` goes to every Ray process (and so to replicas).

    `stop_grace_s`: how long `ray start --block` may take to tear its node down on SIGTERM
    (it waits out every replica's graceful shutdown) before its process group is killed.
    """

    def __init__(self, *, log_dir: Path, env: dict[str, str] | None = None,
                 stop_grace_s: float = 5, cpu_list: str | None = None):
        self.log_dir = log_dir
        self.env = ray_process_env(**{**shipped_ray_env(), **(env or {})})
        self.stop_grace_s = stop_grace_s
        self.cpu_list = cpu_list  # `taskset -c` for every node: its Ray processes inherit it
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.metrics_export_port = free_port()  # the head's Prometheus export
        self._processes: list[subprocess.Popen] = []
        self._logs: list[IO[str]] = []

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def head_pid(self) -> int:
        return self._processes[0].pid

    # --- nodes ------------------------------------------------------------------------------

    def start_head(self, *, num_cpus: int, args: list[str] = (), extra_env=None,
                   timeout_s: float = 90) -> RayCluster:
        """The head with its dashboard; returns once it is a live node and Serve's API answers."""
        self._spawn("head", [
            "--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
            *self._node_ports(self.metrics_export_port), *args,
        ], extra_env)
        deadline = time.monotonic() + timeout_s
        self.wait_for_nodes(1, timeout_s)
        self._wait_for_serve_api(max(1.0, deadline - time.monotonic()))
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
            self._check_processes()
            try:
                nodes = self.alive_nodes()
                if len(nodes) >= count:
                    return nodes
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"fewer than {count} Ray nodes after {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM each node's process group (then SIGKILL what is left), workers first."""
        try:
            node_ids = [node["node_id"] for node in self.alive_nodes()]
        except (httpx.HTTPError, KeyError, ValueError):
            node_ids = []
        for process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                pass
            try:  # fake autoscaler nodes may outlive the `ray start` process in its group
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
        _kill_haproxies_of(node_ids)
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _node_ports(self, metrics_export_port: int | None = None) -> list[str]:
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--metrics-export-port": metrics_export_port or free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        return [f"{flag}={port}" for flag, port in ports.items()]

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the node
        self._logs.append(log)
        command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args]
        if self.cpu_list:
            command = ["taskset", "-c", self.cpu_list, *command]
        self._processes.append(subprocess.Popen(
            command, cwd=REPO_ROOT, env={**self.env, **node_ports_env(), **(extra_env or {})}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def _check_processes(self) -> None:
        if any(process.poll() is not None for process in self._processes):
            logs = "\n".join(p.read_text()[-2000:] for p in self.log_dir.glob("*.log"))
            raise RuntimeError(f"a `ray start` process exited:\n{logs}")

    def _wait_for_serve_api(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_processes()
            try:
                if httpx.get(f"{self.dashboard_url}/api/serve/applications/", timeout=10,
                             headers=dashboard_headers()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Serve's API on {self.dashboard_url} not ready after {timeout_s}s")

    # --- the dashboard's state API (token auth, as every Ray 2.60 cluster) -----------------

    def state(self, resource: str, **filters: str) -> list[dict]:
        params: dict[str, Any] = {"limit": 10000, "detail": "true"}
        if filters:
            params["filter_keys"] = list(filters)
            params["filter_predicates"] = ["="] * len(filters)
            params["filter_values"] = list(filters.values())
        response = httpx.get(f"{self.dashboard_url}/api/v0/{resource}", params=params,
                             headers=dashboard_headers(), timeout=30)
        response.raise_for_status()
        return response.json()["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return self.state("nodes", state="ALIVE")

    def head_node_id(self) -> str:
        (head,) = [node for node in self.alive_nodes() if node["is_head_node"]]
        return head["node_id"]

    def replicas(self, app: str, deployment: str) -> list[dict]:
        """Live replica actors of `deployment` (each with its `node_id` and `pid`)."""
        return self.state("actors", state="ALIVE", class_name=f"ServeReplica:{app}:{deployment}")

    # --- Serve CLI ------------------------------------------------------------------------

    def serve_cli(self, *args: str, check: bool = True,
                  timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "serve"), *args, f"--address={self.dashboard_url}"], cwd=REPO_ROOT,
            env=self.env, capture_output=True, text=True, timeout=timeout_s, check=check,
        )

    def serve_deploy(self, config: dict, path: Path) -> None:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.serve_cli("deploy", str(path))

    def serve_status(self) -> dict:
        return yaml.safe_load(self.serve_cli("status").stdout) or {}

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


def _kill_haproxies_of(node_ids: list[str]) -> None:
    """HAProxy, started by a node's proxy actor in a process group of its own, outlives a
    node stopped with a signal; its files (and so its command line) name the node's id."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmdline and any(node_id in cmdline for node_id in node_ids):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
