"""One environment for the Ray processes everywhere: configs/ray-serve.env is what `make run`
passes to `serve run`, what the image sets and what every Ray container of every overlay carries."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from kuberay_manifests import OVERLAYS, REPO_ROOT, pod_templates, rayservice

from bench.ray_cluster import RAY_SERVE_ENV_FILE, shipped_ray_env
from deployments.ingress import COALESCE_MAX_REQUESTS
from serve_app.settings import Settings

SHIPPED = shipped_ray_env()


def test_the_shipped_switches_are_the_haproxy_ingress_and_throughput_mode():
    assert SHIPPED["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert SHIPPED["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def make(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(["make", "-s", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def test_make_run_passes_the_file_to_serve_run_and_the_environment_wins():
    env = {k: v for k, v in os.environ.items() if k not in SHIPPED}
    serve_run = make("-n", "run", env=env)
    assert "-m deployments.local_service" in serve_run  # which runs `serve run`
    for name, value in SHIPPED.items():
        assert f" {name}={value} " in serve_run
    overridden = make("-n", "run", env=env | {"RAY_SERVE_ENABLE_HA_PROXY": "0"})
    assert " RAY_SERVE_ENABLE_HA_PROXY=0 " in overridden
    assert " RAY_SERVE_ENABLE_HA_PROXY=1 " not in overridden


def test_other_targets_such_as_make_test_do_not_get_the_ray_switches(tmp_path):
    # Throughput mode in pytest's own process would break the tests that call a Serve
    # handle from synchronous code (no event loop for the handle's router).
    probe = tmp_path / "probe.mk"
    probe.write_text("probe:\n\t@env\n")
    env = {k: v for k, v in os.environ.items() if k not in SHIPPED}
    out = make("-f", "Makefile", "-f", str(probe), "probe", env=env)
    exported = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert not set(SHIPPED) & set(exported)


def test_the_image_sets_the_same_environment():
    dockerfile = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    image_env = dict(re.findall(r"\b(RAY_SERVE_[A-Z_]+)=(\S+)", dockerfile))
    assert image_env == SHIPPED


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_container_of_the_cluster_carries_the_same_environment(overlay):
    service = rayservice(overlay)
    seen = 0
    for _group, template in pod_templates(service):
        for container in template["spec"]["containers"]:  # the Ray containers, not init ones
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert {name: env.get(name) for name in SHIPPED} == SHIPPED, container["name"]
            seen += 1
    assert seen >= 2  # the head and at least one worker group


def test_one_shared_model_call_fits_the_replicas_grpc_message_limit():
    # A shared call carries the texts of up to COALESCE_MAX_REQUESTS requests, each at most
    # max_body_bytes of JSON (and a text's UTF-8 bytes never exceed its JSON encoding's).
    largest_call = COALESCE_MAX_REQUESTS * Settings().max_body_bytes
    assert int(SHIPPED["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) >= largest_call
    assert RAY_SERVE_ENV_FILE.is_file()
