"""Building the kustomize overlays and validating objects against the real KubeRay CRDs."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERAY_DIR = REPO_ROOT / "kuberay"
OVERLAYS = ("cpu", "gpu")
CRD_DIR = (REPO_ROOT / ".." / "shared" / "kuberay" / "crds").resolve()
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml",
             "RayJob": "ray.io_rayjobs.yaml"}
#: the Kubernetes version whose offline schemas kubernetes-validate checks core objects against
KUBERNETES_VERSION = "1.33.0"


def require_crds() -> Path:
    """The CRD directory; a skip when it is absent, a failure when CI is set."""
    if not CRD_DIR.is_dir():
        message = f"KubeRay CRDs not found at {CRD_DIR}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CRD_DIR


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed")
        pytest.skip("kubectl is not installed")
    return path


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <path>` as a list of objects; raises with kubectl's message."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def _built_overlay(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_build(KUBERAY_DIR / "overlays" / name))


def built_overlay(name: str) -> list[dict[str, Any]]:
    """A fresh copy of the overlay's objects (built once per test session)."""
    return copy.deepcopy(list(_built_overlay(name)))


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def rayservice(name: str) -> dict[str, Any]:
    return only(built_overlay(name), "RayService")


# --- CRD schemas -------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema that refuses properties it does not list.

    CRD schemas leave `additionalProperties` unset, and the API server prunes unknown fields
    silently, so a misspelt field would simply vanish. Every object schema that lists its
    properties and does not preserve unknown fields gets `additionalProperties: false`.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """A strict validator for the served version `ray.io/v1` of `kind`'s CRD."""
    crd = yaml.safe_load((require_crds() / CRD_FILES[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    schema = strict(version["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of a RayService/RayCluster, as `path: message` lines."""
    validator = crd_validator(obj["kind"])
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


# --- walking the pod templates --------------------------------------------------------------


def pod_templates(service: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, pod template) for the head group and every worker group."""
    cluster = service["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs") or []:
        yield group["groupName"], group["template"]


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec.get("containers") or []
