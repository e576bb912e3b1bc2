"""The bulk-scoring RayJobs (kuberay/jobs/): valid against the real KubeRay CRDs, strictly, and
their entrypoint is a command `python -m bulk` accepts, with the resources it asks for."""

from __future__ import annotations

import shlex

import pytest
import yaml

from bulk.cli import build_parser, options_from
from kuberay_manifests import KUBERAY_DIR, crd_errors

JOBS = {"cpu": KUBERAY_DIR / "jobs" / "bulk-score-cpu.yaml",
        "gpu": KUBERAY_DIR / "jobs" / "bulk-score-gpu.yaml"}


def rayjob(variant: str) -> dict:
    return yaml.safe_load(JOBS[variant].read_text())


def entrypoint_options(job: dict):
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "bulk"]
    args = build_parser().parse_args(argv[3:])
    return args, options_from(args, None)


@pytest.mark.parametrize("variant", JOBS)
def test_rayjob_matches_the_crd_schema(variant):
    job = rayjob(variant)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert crd_errors(job) == []
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "bulk"},
               "spec": job["spec"]["rayClusterSpec"]}
    assert crd_errors(cluster) == []


def test_a_misspelt_rayjob_field_is_refused():
    job = rayjob("cpu")
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    assert any(error.startswith("spec:") for error in crd_errors(job))


@pytest.mark.parametrize("variant", JOBS)
def test_rayjob_runs_the_score_command_on_its_own_cluster(variant):
    job = rayjob(variant)
    args, options = entrypoint_options(job)
    assert args.command == "score" and args.input.startswith("s3://")
    assert args.address is None  # a Ray job's driver finds its cluster through RAY_ADDRESS
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert 1 <= options.min_actors <= options.max_actors
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    cpus_per_pod = min(int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                       for group in workers)  # fmt: skip
    assert options.num_cpus_per_actor <= cpus_per_pod  # an actor fits on a worker


def test_gpu_rayjob_shares_each_gpu_between_actors():
    job = rayjob("gpu")
    _, options = entrypoint_options(job)
    assert 0 < options.num_gpus_per_actor < 1
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus_per_pod = int(limits["nvidia.com/gpu"])
    actors_per_pod = gpus_per_pod / options.num_gpus_per_actor
    assert actors_per_pod * options.num_cpus_per_actor <= int(limits["cpu"])
    assert options.max_actors <= actors_per_pod * group["maxReplicas"]
    _, cpu_options = entrypoint_options(rayjob("cpu"))
    assert cpu_options.num_gpus_per_actor == 0
