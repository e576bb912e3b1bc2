"""Serve's CLI as an operator runs it against a `ray start` cluster: the venv's `serve` from a
directory outside the checkout, without PYTHONPATH. `serve status` imports the model
deployment's request router (deployments.routing), so this holds only because the project is
installed. Through a TCP forward too, as `kubectl port-forward` reaches a RayService's
dashboard. (`make run` gets the same commands in test_local_service.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.ray

SERVE = str(Path(sys.executable).parent / "serve")


def operator_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    return env | {"RAY_AUTH_MODE": "token"}


def serve_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([SERVE, *args], cwd=cwd, env=operator_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"serve {args[0]} failed: {done.stderr[-2000:]}"
    return done


def test_status_config_and_deploy_from_outside_the_checkout(serve_instance, tmp_path):
    address = ["--address", serve_instance.dashboard_url]
    status = yaml.safe_load(serve_cli("status", *address, cwd=tmp_path).stdout)
    assert status["applications"]["sentiment"]["status"] == "RUNNING"
    (app,) = list(yaml.safe_load_all(serve_cli("config", *address, cwd=tmp_path).stdout))
    assert app["name"] == "sentiment"
    # The config it runs, deployed again: accepted, and the application stays up.
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_instance.config, sort_keys=False))
    serve_cli("deploy", "serve.yaml", *address, cwd=tmp_path)
    serve_instance.cluster.wait_until_running("sentiment", timeout_s=120)


def test_status_through_a_forwarded_dashboard_port(serve_instance, tmp_path):
    dashboard = urlparse(serve_instance.dashboard_url)
    with TcpProxy(dashboard.hostname, dashboard.port) as forward:
        status = serve_cli("status", "--address", f"http://127.0.0.1:{forward.port}",
                           cwd=tmp_path)
    deployments = yaml.safe_load(status.stdout)["applications"]["sentiment"]["deployments"]
    assert set(deployments) == {"APIIngress", "SentimentModel"}
