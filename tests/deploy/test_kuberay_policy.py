"""The production rules the manifests must keep: what each object promises the operator."""

from __future__ import annotations

import re

import pytest
import yaml

from kuberay_manifests import (
    KUBERAY_DIR,
    OVERLAYS,
    built_overlay,
    containers,
    only,
    pod_templates,
    rayservice,
)

SECRET_NAME = "sentiment-secrets"


def all_containers(overlay):
    """(where, container) for every container the overlay runs, the autoscaler included."""
    objects = built_overlay(overlay)
    service = only(objects, "RayService")
    for group, template in pod_templates(service):
        for container in containers(template["spec"]):
            yield f"{group}/{container['name']}", container
    yield "autoscaler", service["spec"]["rayClusterConfig"]["autoscalerOptions"]
    redis = only(objects, "StatefulSet")
    for container in containers(redis["spec"]["template"]["spec"]):
        yield f"redis/{container['name']}", container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_states_cpu_and_memory_requests_and_limits(overlay):
    for where, container in all_containers(overlay):
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{where}: {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_head_runs_no_replicas_and_serves_the_dashboard(overlay):
    head = rayservice(overlay)["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265
    assert "num-gpus" not in head["rayStartParams"]
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_gpu_overlay_has_an_autoscaled_one_gpu_worker_group():
    (group,) = rayservice("gpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"]
    tolerations = group["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_cpu_overlay_has_an_autoscaled_cpu_worker_group_without_gpus():
    (group,) = rayservice("cpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert 1 <= group["minReplicas"] <= group["replicas"] < group["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_in_tree_autoscaler_is_enabled_with_options(overlay):
    cluster = rayservice(overlay)["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    options = cluster["autoscalerOptions"]
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    assert options["idleTimeoutSeconds"] > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_is_exposed_as_sentiment_service_load_balancer_on_port_80(overlay):
    service = rayservice(overlay)
    serve_service = service["spec"]["serveService"]
    assert serve_service["metadata"]["name"] == "sentiment-service"
    assert serve_service["spec"]["type"] == "LoadBalancer"
    (port,) = serve_service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("serve", 80)
    # KubeRay keeps only the port number, so the proxies must listen on that very port.
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config["http_options"]["port"] == 80
    assert serve_config["http_options"]["host"] == "0.0.0.0"
    for group, template in pod_templates(service):
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["serve"] == 80, group
        sysctls = {s["name"]: s["value"] for s in template["spec"]["securityContext"]["sysctls"]}
        assert sysctls["net.ipv4.ip_unprivileged_port_start"] == "0", group


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gcs_fault_tolerance_uses_the_redis_in_the_overlay(overlay):
    objects = built_overlay(overlay)
    options = only(objects, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    host, port = options["redisAddress"].split(":")
    redis = only(objects, "Service")
    assert redis["metadata"]["name"] == host
    assert int(port) in [p["port"] for p in redis["spec"]["ports"]]
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == {
        "name": SECRET_NAME, "key": "REDIS_PASSWORD"}
    redis_env = only(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "REDIS_PASSWORD"}}} in redis_env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_the_secret_only(overlay):
    service = rayservice(overlay)
    for group, template in pod_templates(service):
        for container in containers(template["spec"]):
            sources = [s["secretRef"]["name"] for s in container.get("envFrom", [])
                       if "secretRef" in s]
            assert sources == [SECRET_NAME], f"{group}/{container['name']}"
            literal = {e["name"] for e in container.get("env", []) if "value" in e}
            assert not literal & {"DATABASE_URL", "SECRET_KEY", "REDIS_PASSWORD"}
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    for app in serve_config["applications"]:
        env_vars = (app.get("runtime_env") or {}).get("env_vars") or {}
        for name in ("DATABASE_URL", "SECRET_KEY"):
            assert env_vars.get(name, f"${{{name}}}") == f"${{{name}}}", name


def test_secret_example_holds_placeholders_only():
    secrets = {s["metadata"]["name"]: s for s in
               yaml.safe_load_all((KUBERAY_DIR / "secret.example.yaml").read_text())}
    assert set(secrets) == {SECRET_NAME, "sentiment-ray-auth"}
    assert set(secrets[SECRET_NAME]["stringData"]) >= {"DATABASE_URL", "SECRET_KEY", "REDIS_PASSWORD"}
    assert set(secrets["sentiment-ray-auth"]["stringData"]) == {"auth_token"}
    for secret in secrets.values():
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert "CHANGE_ME" in value, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_token_auth_uses_the_example_secret(overlay):
    auth = rayservice(overlay)["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "sentiment-ray-auth"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_without_privilege_escalation(overlay):
    objects = built_overlay(overlay)
    templates = [t for _, t in pod_templates(only(objects, "RayService"))]
    templates.append(only(objects, "StatefulSet")["spec"]["template"])
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["securityContext"]["runAsUser"] != 0
        for container in containers(template["spec"]):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_before_ray_starts_on_the_head(overlay):
    head = rayservice(overlay)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    (migrate,) = head["initContainers"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["image"] == head["containers"][0]["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitors_scrape_named_ports_that_ray_pods_declare(overlay):
    objects = built_overlay(overlay)
    service = only(objects, "RayService")
    ports_by_type = {"head": set(), "worker": set()}
    labels_by_type = {"head": [], "worker": []}
    for group, template in pod_templates(service):
        node_type = "head" if group == "head" else "worker"
        ports_by_type[node_type] |= {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        labels_by_type[node_type].append(template["metadata"]["labels"])
    monitors = [obj for obj in objects if obj["kind"] == "PodMonitor"]
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    covered = set()
    for monitor in monitors:
        selector = dict(monitor["spec"]["selector"]["matchLabels"])
        node_type = selector.pop("ray.io/node-type")  # KubeRay sets it on every Ray pod
        covered.add(node_type)
        for labels in labels_by_type[node_type]:
            assert selector.items() <= labels.items(), monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports_by_type[node_type], endpoint["port"]
    assert covered == {"head", "worker"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_version_matches_the_image_and_requirements(overlay):
    requirements = (KUBERAY_DIR.parent / "requirements.txt").read_text()
    ray_pin = re.search(r"^ray\[[a-z,]+\]==([\d.]+)$", requirements, re.M).group(1)
    assert rayservice(overlay)["spec"]["rayClusterConfig"]["rayVersion"] == ray_pin
