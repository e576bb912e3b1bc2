"""The RayService's serveConfigV2 is generated from the project's Serve configs, never edited by
hand: the committed overlays must equal what `python -m kuberay.render` generates."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from kuberay import render
from kuberay_manifests import OVERLAYS, REPO_ROOT, rayservice


def test_committed_overlays_equal_the_generated_ones():
    assert render.stale_overlays() == [], "run: python -m kuberay.render"


def test_check_command_exits_zero_when_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "kuberay.render", "--check"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def copy_sources(tmp_path):
    for overlay, source in render.SOURCES.items():
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / source, tmp_path / source)
        target = tmp_path / "kuberay" / "overlays" / overlay / render.PATCH_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(render.patch_path(overlay), target)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_changed_serve_config_makes_its_overlay_stale(tmp_path, overlay):
    copy_sources(tmp_path)
    assert render.stale_overlays(tmp_path) == []
    source = tmp_path / render.SOURCES[overlay]
    config = yaml.safe_load(source.read_text())
    config["applications"][0]["route_prefix"] = "/changed"
    source.write_text(yaml.safe_dump(config))
    assert render.stale_overlays(tmp_path) == [overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_v2_is_the_source_config_with_cluster_http_options(overlay):
    embedded = yaml.safe_load(rayservice(overlay)["spec"]["serveConfigV2"])
    source = yaml.safe_load((REPO_ROOT / render.SOURCES[overlay]).read_text())
    assert embedded["http_options"] == {**(source.get("http_options") or {}), **render.CLUSTER_HTTP_OPTIONS}
    assert embedded["proxy_location"] == "EveryNode"
    assert embedded["applications"] == render.cluster_serve_config(source)["applications"]
    unchanged = ("proxy_location", "http_options", "applications")
    assert {k: v for k, v in embedded.items() if k not in unchanged} == {
        k: v for k, v in source.items() if k not in unchanged}
    names = [app["name"] for app in embedded["applications"]]
    assert "sentiment" in names
    (app,) = [app for app in embedded["applications"] if app["name"] == "sentiment"]
    assert app["import_path"] == "deployments.app:build_app"
    assert app["route_prefix"] == "/"


def test_literal_secrets_are_dropped_and_environment_references_kept():
    source = {
        "http_options": {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 30},
        "applications": [
            {"name": "a", "runtime_env": {"env_vars": {
                "DATABASE_URL": "sqlite+aiosqlite:///./sentiment.db",
                "SECRET_KEY": "${SECRET_KEY}",
                "MAX_TEXT_CHARS": "5000",
            }}},
        ],
    }
    out = render.cluster_serve_config(source)
    assert out["http_options"] == {"host": "0.0.0.0", "port": 80, "request_timeout_s": 30}
    assert out["proxy_location"] == "EveryNode"
    assert out["applications"][0]["runtime_env"]["env_vars"] == {
        "SECRET_KEY": "${SECRET_KEY}", "MAX_TEXT_CHARS": "5000"}
    assert source["http_options"]["port"] == 8000, "the source config must not be modified"


def deployment(overlay, name):
    embedded = yaml.safe_load(rayservice(overlay)["spec"]["serveConfigV2"])
    (app,) = [app for app in embedded["applications"] if app["name"] == "sentiment"]
    (found,) = [d for d in app.get("deployments", []) if d["name"] == name]
    return found


def test_gpu_model_replicas_share_each_gpu_and_fit_a_worker():
    model = deployment("gpu", "SentimentModel")
    num_gpus = model["ray_actor_options"]["num_gpus"]
    assert 0 < num_gpus < 1, "model replicas should take a fraction of a GPU"
    (group,) = rayservice("gpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    worker_cpus = float(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    replicas_per_gpu = int(round(1 / num_gpus))
    model_cpus = model["ray_actor_options"].get("num_cpus", 1)
    assert replicas_per_gpu * model_cpus <= worker_cpus, "a full GPU's replicas must fit on one pod"


def test_cpu_overlay_asks_for_no_gpus():
    for name in ("SentimentModel", "APIIngress"):
        options = deployment("cpu", name).get("ray_actor_options") or {}
        assert options.get("num_gpus", 0) == 0, name
