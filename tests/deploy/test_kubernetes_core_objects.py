"""Core Kubernetes objects (and the pod templates inside the RayService) validate against the
offline Kubernetes schemas shipped by kubernetes-validate, in strict mode."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from kuberay_manifests import (
    KUBERAY_DIR,
    KUBERNETES_VERSION,
    OVERLAYS,
    built_overlay,
    pod_templates,
    rayservice,
)

CORE_KINDS = {"Namespace", "Service", "StatefulSet", "Secret"}


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_are_valid_kubernetes(overlay):
    core = [obj for obj in built_overlay(overlay) if obj["kind"] in CORE_KINDS]
    assert {obj["kind"] for obj in core} == {"Namespace", "Service", "StatefulSet"}
    for obj in core:
        validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_pod_templates_are_valid_pods(overlay):
    for group, template in pod_templates(rayservice(overlay)):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sentiment-{group}"}}
        pod["metadata"].update(template.get("metadata", {}))
        pod["spec"] = template["spec"]
        validate(pod)


def test_secret_example_holds_valid_secrets():
    secrets = list(yaml.safe_load_all((KUBERAY_DIR / "secret.example.yaml").read_text()))
    assert len(secrets) == 2
    for secret in secrets:
        validate(secret)


def test_a_misspelt_core_field_is_refused():
    (service,) = [o for o in built_overlay("cpu") if o["kind"] == "Service"]
    service["spec"]["port"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)
