"""Every Ray container reads OpenTelemetry's variables from one ConfigMap, and Ray Serve's
tracing switches in it are the ones those variables imply."""

from __future__ import annotations

import pytest
from kuberay_manifests import OVERLAYS, built_overlay, containers, only, pod_templates

from deployments.tracing_env import EXPORTER_IMPORT_PATH, ray_tracing_env

CONFIG_MAP = "sentiment-tracing"


def tracing_config_map(overlay: str) -> dict[str, str]:
    [config_map] = [obj for obj in built_overlay(overlay)
                    if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == CONFIG_MAP]
    return config_map["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_container_takes_the_tracing_config_map(overlay):
    service = only(built_overlay(overlay), "RayService")
    seen = []
    for group, template in pod_templates(service):
        for container in containers(template["spec"]):
            if not container["name"].startswith("ray-"):
                continue  # the migration init container runs no Ray process
            maps = [s["configMapRef"]["name"] for s in container.get("envFrom", [])
                    if "configMapRef" in s]
            assert maps == [CONFIG_MAP], f"{group}/{container['name']}"
            seen.append(container["name"])
    assert "ray-head" in seen and "ray-worker" in seen


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_points_at_an_otlp_http_collector(overlay):
    data = tracing_config_map(overlay)
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert data["OTEL_SERVICE_NAME"] == "sentiment-serve"
    assert all(isinstance(value, str) for value in data.values())  # ConfigMap data are strings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_serve_switches_agree_with_the_opentelemetry_variables(overlay):
    data = tracing_config_map(overlay)
    otel = {k: v for k, v in data.items() if k.startswith("OTEL_")}
    ray = {k: v for k, v in data.items() if k.startswith("RAY_")}
    assert ray == ray_tracing_env(otel)
    assert ray["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"] == EXPORTER_IMPORT_PATH
    assert set(data) == set(otel) | set(ray)
