"""Ray's token authentication as seen by the processes that start and query local clusters.

Ray 2.60 turns token auth on for local clusters. `ray.init()` (and so `serve run`) creates
the token in ~/.ray/auth_token when it is missing; `ray start` does not, and fails on a
machine that never ran Ray. The dashboard's HTTP API wants the same token as a bearer header.
Only the processes that start clusters (the benchmarks and the tests, which import `bench`)
need this: Serve's own processes get the token from the cluster they run in.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).parent / "ray")


def token_file() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def auth_token() -> str:
    """The token Ray's CLI would use: RAY_AUTH_TOKEN, else the token file; '' if neither."""
    path = token_file()
    return os.environ.get("RAY_AUTH_TOKEN") or (path.read_text().strip() if path.exists() else "")


def dashboard_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def ray_process_env(**extra: str) -> dict[str, str]:
    """Environment for Ray processes started from this checkout: token auth, offline models,
    the repository importable; a token is created first when none exists."""
    ensure_auth_token(RAY_CLI)
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
    }


@functools.cache
def ensure_auth_token(ray_cli: str) -> None:
    """Create the local token (as `ray.init()` would) unless one exists; prints nothing."""
    if auth_token():
        return
    subprocess.run([ray_cli, "get-auth-token", "--generate"], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env={**os.environ, "RAY_AUTH_MODE": "token"})
