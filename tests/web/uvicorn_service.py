"""The real app (create_app + the real classifier) under uvicorn in a subprocess.

Used by the browser tests only where no Ray Serve application is available to them.
`uvicorn --factory tests.web.uvicorn_service:build` reads DATABASE_URL and SECRET_KEY.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def build():
    from serve_app.app import create_app, in_process_classify
    from serve_app.classifier import SentimentClassifier

    return create_app(in_process_classify(SentimentClassifier.load()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_service(database_url: str, log_path: Path, timeout_s: float = 120) -> Iterator[str]:
    """Start the service, wait until /health says healthy, yield its base URL, stop it."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "ui-test-" + "k" * 40,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("REDIS_URL", None)
    # Alembic's env runs its own event loop: migrate in a process of its own.
    subprocess.run([sys.executable, "-c", "import sys; from serve_app.db import upgrade_to_head; "
                    "upgrade_to_head(sys.argv[1])", database_url], cwd=REPO_ROOT, env=env, check=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "tests.web.uvicorn_service:build",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not healthy after {timeout_s}s: {log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
