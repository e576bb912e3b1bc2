"""Every RayService/RayCluster validates against the served `ray.io/v1` schema of the real
KubeRay CRDs, strictly: a field the schema does not know is an error, not silently pruned."""

from __future__ import annotations

import copy

import pytest

from kuberay_manifests import OVERLAYS, built_overlay, crd_errors, rayservice, strict


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_matches_the_crd_schema(overlay):
    ray_objects = [obj for obj in built_overlay(overlay) if obj["kind"] in ("RayService", "RayCluster")]
    assert ray_objects, "the overlay has no KubeRay object"
    for obj in ray_objects:
        assert obj["apiVersion"] == "ray.io/v1"
        assert crd_errors(obj) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rayservice_cluster_is_also_a_valid_raycluster_spec(overlay):
    # What KubeRay creates from rayClusterConfig must pass the RayCluster CRD as well.
    service = rayservice(overlay)
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "sentiment-raycluster"},
        "spec": service["spec"]["rayClusterConfig"],
    }
    assert crd_errors(cluster) == []


@pytest.mark.parametrize(
    "mutate, expected_path",
    [
        # misspelt field names at three depths
        (lambda s: s["spec"].update(serveConfigV3=s["spec"].pop("serveConfigV2")), "spec"),
        (
            lambda s: s["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(minReplica=1),
            "spec/rayClusterConfig/workerGroupSpecs/0",
        ),
        (
            lambda s: s["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
                "containers"
            ][0].update(resource={"limits": {"cpu": "1"}}),
            "spec/rayClusterConfig/headGroupSpec/template/spec/containers/0",
        ),
        # wrong types and values
        (
            lambda s: s["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas="eight"),
            "spec/rayClusterConfig/workerGroupSpecs/0/maxReplicas",
        ),
        (
            lambda s: s["spec"]["rayClusterConfig"]["autoscalerOptions"].update(upscalingMode="Fast"),
            "spec/rayClusterConfig/autoscalerOptions/upscalingMode",
        ),
    ],
    ids=["serveConfigV3", "minReplica", "container-resource", "maxReplicas-string", "upscalingMode"],
)
def test_a_broken_rayservice_is_refused(mutate, expected_path):
    service = rayservice("gpu")
    mutate(service)
    errors = crd_errors(service)
    assert errors, "the schema accepted a broken RayService"
    assert any(error.startswith(expected_path + ":") for error in errors), errors


def test_strict_keeps_maps_and_preserved_fields_open():
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"a": {"type": "string"}}},
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
    out = strict(copy.deepcopy(schema))
    assert out["additionalProperties"] is False
    assert out["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in out["properties"]["free"]
    assert out["properties"]["closed"]["additionalProperties"] is False
