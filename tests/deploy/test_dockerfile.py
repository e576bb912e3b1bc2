"""The container image: the official Ray image at the Ray version we pin, our requirements and
code, a non-root user, and a build context without the virtualenv, git history or tests."""

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
    return re.search(r"^ray\[serve\]==([\d.]+)$", requirements, re.M).group(1)


def test_base_image_is_the_official_ray_image_at_our_ray_version():
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    (base,) = [a for k, a in instructions() if k == "FROM"]
    assert base == "rayproject/ray:${RAY_IMAGE_TAG}"
    assert args["RAY_IMAGE_TAG"] == f"{ray_pin()}-py311"


def test_gpu_variant_is_documented_with_the_gpu_tag():
    assert f"RAY_IMAGE_TAG={ray_pin()}-py311-gpu" in DOCKERFILE


def test_requirements_are_installed_before_the_code_is_copied():
    steps = instructions()
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "-r requirements.txt" in a)
    copy_requirements = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "requirements.txt" in a)
    copy_code = [i for i, (k, a) in enumerate(steps) if k == "COPY" and "deployments/" in a]
    assert copy_requirements < install < copy_code[0]


def test_every_package_the_app_imports_is_copied():
    copied = " ".join(a for k, a in instructions() if k == "COPY")
    for path in ("serve_app/", "deployments/", "models/", "migrations/", "alembic.ini", "configs/"):
        assert path in copied, path


def test_training_code_stays_out_of_the_image():
    copied = " ".join(a for k, a in instructions() if k == "COPY")
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert "training" not in copied and "training" in ignored


def test_image_runs_as_a_non_root_user():
    users = [a for k, a in instructions() if k == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "*.db"} <= ignored
