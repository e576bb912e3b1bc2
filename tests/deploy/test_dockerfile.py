"""The container image: the official Ray image at the Ray version we pin by default (a plain
Python base by build argument), our requirements and code, uid 1000, and a build context without
the virtualenv, git history, tests or training code. tests/image builds and serves it."""

from __future__ import annotations

import re

from kuberay_manifests import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def ray_pin() -> str:
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    return re.search(r"^ray\[[\w,]+\]==([\d.]+)$", requirements, re.M).group(1)


def ignored() -> set[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_base_image_is_the_official_ray_image_at_our_ray_version_by_default():
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    (base,) = [a for k, a in instructions() if k == "FROM"]
    assert base == "${BASE_IMAGE}"
    assert args["BASE_IMAGE"] == "rayproject/ray:${RAY_IMAGE_TAG}"
    assert args["RAY_IMAGE_TAG"] == f"{ray_pin()}-py311"


def test_gpu_variant_is_documented_with_the_gpu_tag():
    assert f"RAY_IMAGE_TAG={ray_pin()}-py311-gpu" in DOCKERFILE


def test_requirements_are_installed_before_the_code_is_copied():
    steps = instructions()
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "-r requirements.txt" in a)
    copy_requirements = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "requirements.txt" in a)
    copy_code = [i for i, (k, a) in enumerate(steps) if k == "COPY" and a.split()[-2] == "."]
    assert copy_requirements < install < copy_code[0]


def test_the_whole_context_is_copied_and_every_package_the_service_runs_is_in_it():
    copied = [a.split()[-2] for k, a in instructions() if k == "COPY"]
    assert "." in copied, "the build context is copied whole, so new packages come along"
    needed = ("serve_app", "deployments", "bulk", "models", "migrations", "alembic.ini",
              "configs", "serve_config.yaml")
    assert not {path for path in needed if path in ignored() or f"{path}/" in ignored()}


def test_training_code_stays_out_of_the_image():
    assert "training" in ignored()


def test_image_runs_as_uid_1000():
    users = [a for k, a in instructions() if k == "USER"]
    assert users and users[-1] == "ray"
    assert "useradd --uid 1000 --gid 100" in DOCKERFILE


def test_dockerignore_keeps_local_state_out_of_the_context():
    assert {".git", ".venv", "tests", "*.db", "*.db-*", ".sentiment-dev-secret-key*"} <= ignored()


def test_the_cpu_image_refuses_a_cuda_torch_build():
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    assert args["DEVICE"] == "cpu"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "torch.version.cuda is None" in DOCKERFILE
