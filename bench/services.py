"""Start and stop the servers under test as subprocesses this process owns.

Every port is picked free at start (the machine is shared; Redis already holds Ray's default
GCS port), and only processes started here are ever stopped.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from bench.local_ports import free_port
from bench.ray_auth import dashboard_headers as ray_auth_headers
from bench.ray_auth import ray_process_env
from bench.ray_cluster import RayCluster

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_http_ok(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, headers: dict | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            resp = httpx.get(url, timeout=5, headers=headers)
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s: {last}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, grace_s: float = 30) -> None:
    """Stop a process group we started: polite signal first, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def migrate(database_url: str) -> None:
    subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"],
        cwd=REPO,
        env=ray_process_env(DATABASE_URL=database_url),
        check=True,
        capture_output=True,
    )


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    """Settings shared by both servers: same database engine, same key, no throttling."""
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
        "PREDICT_RATE_PER_SECOND": "0",  # 0 disables the per-user limit
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def baseline_server(workdir: Path, **env_extra: str) -> Iterator[str]:
    """The naive server under uvicorn; yields its base URL."""
    db_url = f"sqlite+aiosqlite:///{workdir / 'baseline.db'}"
    migrate(db_url)
    port = free_port()
    cmd = [
        str(BIN / "python"), "-m", "uvicorn", "bench.baseline_server:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ray_process_env(**app_env(db_url, **env_extra)), start_new_session=True
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", 180, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


class RayServe:
    """A private single-node Ray cluster with our Serve application deployed from a config file."""

    def __init__(
        self,
        workdir: Path,
        config_path: Path = REPO / "serve_config.yaml",
        num_cpus: int = 2,
        cluster_env: dict[str, str] | None = None,
        cpu_list: str | None = None,
    ):
        self.workdir = workdir
        # `taskset -c` cores for every Ray process (they inherit the affinity of `ray start`).
        self.cpu_list = cpu_list
        self.cluster_env = cluster_env or {}  # for every Ray process: proxy, controller, replicas
        self.base_config = yaml.safe_load(config_path.read_text())
        self.num_cpus = num_cpus
        # The cluster's own processes get up to a minute to shut down cleanly.
        self.cluster = RayCluster(log_dir=workdir, env=self.cluster_env, stop_grace_s=60,
                                  cpu_list=cpu_list)
        self.http_port = free_port()
        self.database_url = f"sqlite+aiosqlite:///{workdir / 'sentiment.db'}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dashboard(self) -> str:
        return self.cluster.dashboard_url

    @property
    def metrics_port(self) -> int:
        """The head's Prometheus export."""
        return self.cluster.metrics_export_port

    @property
    def root_pid(self) -> int:
        """The head's `ray start` process: every process of the service runs under it."""
        return self.cluster.head_pid

    def start(self) -> None:
        migrate(self.database_url)
        self.cluster.start_head(num_cpus=self.num_cpus, timeout_s=120)

    def config(self, **overrides) -> dict:
        """The project's serve config with this cluster's HTTP port and the bench's settings.

        overrides: env (extra env vars for the app), model_max_ongoing / ingress_max_ongoing,
        deployments ({deployment name: {option: value}} set on that deployment's entry),
        user_config (keys set in the SentimentModel's user_config, e.g. model_dir).
        """
        cfg = copy.deepcopy(self.base_config)
        cfg.setdefault("http_options", {}).update(host="127.0.0.1", port=self.http_port)
        env = app_env(self.database_url, **overrides.get("env", {}))
        for app in cfg["applications"]:
            runtime_env = app.setdefault("runtime_env", {})
            runtime_env.setdefault("env_vars", {}).update(env)
            for dep in app.get("deployments", []):
                key = {"SentimentModel": "model_max_ongoing", "APIIngress": "ingress_max_ongoing"}
                value = overrides.get(key.get(dep["name"], ""))
                if value is not None:
                    dep["max_ongoing_requests"] = value
                    # Serve refuses a target above the cap; keep autoscaling meaningful.
                    auto = dep.get("autoscaling_config")
                    if auto and auto.get("target_ongoing_requests", 0) > value:
                        auto["target_ongoing_requests"] = value
                dep.update(overrides.get("deployments", {}).get(dep["name"], {}))
                if dep["name"] == "SentimentModel" and overrides.get("user_config"):
                    dep["user_config"] = {**dep.get("user_config", {}), **overrides["user_config"]}
        return cfg

    def applications(self) -> dict:
        resp = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=10,
                         headers=ray_auth_headers())  # fmt: skip
        resp.raise_for_status()
        return resp.json().get("applications", {})

    def deploy(self, cfg: dict, timeout_s: float = 240) -> None:
        """`serve deploy` cfg and wait until this deployment (not the previous one) runs."""
        path = self.workdir / "serve_config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        before = {name: app.get("last_deployed_time_s") for name, app in self._apps_or_empty().items()}
        done = subprocess.run(
            [str(BIN / "serve"), "deploy", str(path), "-a", self.dashboard],
            cwd=REPO, env=ray_process_env(), capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {done.stderr[-2000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = {name: app.get("last_deployed_time_s") for name, app in self._apps_or_empty().items()}
            if now and now != before:
                break
            time.sleep(1)
        time.sleep(2)  # let the controller start rolling replicas before polling their health
        self.wait_running(timeout_s)

    def _apps_or_empty(self) -> dict:
        try:
            return self.applications()
        except (httpx.HTTPError, ValueError):
            return {}

    def wait_running(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            try:
                apps = self.applications()
                status = {name: app.get("status") for name, app in apps.items()}
                deps = [d for app in apps.values() for d in app.get("deployments", {}).values()]
                if status and all(s == "RUNNING" for s in status.values()) and all(
                    d.get("status") == "HEALTHY" for d in deps
                ):
                    wait_http_ok(f"{self.url}/health", max(5, deadline - time.monotonic()))
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"Serve application not running after {timeout_s}s: {status}")

    def stop(self) -> None:
        self.cluster.stop()

    def __enter__(self) -> RayServe:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sentiment-bench-") as tmp:
        yield Path(tmp)
