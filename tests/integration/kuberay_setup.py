"""What the tests of KubeRay-shaped clusters share: the app's environment as a pod gets it, the
init container's migrations, the overlays' `serveConfigV2` and its changes for this machine,
and a user to call the API with. The clusters themselves are `bench.ray_cluster.RayCluster`s:
a head and worker nodes, each a `ray start --block` process, as on KubeRay.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import httpx
import yaml

from bench.ray_cluster import BIN, REPO_ROOT


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
