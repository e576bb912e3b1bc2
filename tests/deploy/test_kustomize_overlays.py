"""`kubectl kustomize` builds the base and every overlay into the objects a cluster needs."""

from __future__ import annotations

import pytest

from kuberay_manifests import KUBERAY_DIR, OVERLAYS, built_overlay, kustomize_build


def test_base_builds_without_an_overlay():
    kinds = sorted(obj["kind"] for obj in kustomize_build(KUBERAY_DIR / "base"))
    assert kinds == ["ConfigMap", "Namespace", "NetworkPolicy", "PodMonitor", "PodMonitor",
                     "RayService", "Service", "StatefulSet"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_one_rayservice_with_redis_and_monitors(overlay):
    objects = built_overlay(overlay)
    by_kind = sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)
    assert by_kind == [
        ("ConfigMap", "sentiment-tracing"),
        ("Namespace", "sentiment"),
        ("NetworkPolicy", "sentiment-ray"),
        ("PodMonitor", "sentiment-ray-head"),
        ("PodMonitor", "sentiment-ray-workers"),
        ("RayService", "sentiment"),
        ("Service", "redis"),
        ("StatefulSet", "redis"),
    ]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "sentiment", obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sets_its_own_image_on_every_ray_container(overlay):
    (service,) = [obj for obj in built_overlay(overlay) if obj["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    images = {
        container["image"]
        for template in templates
        for key in ("initContainers", "containers")
        for container in template["spec"].get(key, [])
    }
    expected_tag = "0.1.0-gpu" if overlay == "gpu" else "0.1.0"
    assert images == {f"registry.example.com/sentiment-serve:{expected_tag}"}


def test_a_broken_kustomization_fails_the_build(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RuntimeError, match="missing.yaml"):
        kustomize_build(tmp_path)
