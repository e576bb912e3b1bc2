"""The bench's naive baseline server answers like the service it is measured against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


async def test_the_baseline_server_signs_up_logs_in_and_classifies(tmp_path, monkeypatch,
                                                                  tiny_hf_dir):
    url = f"sqlite+aiosqlite:///{tmp_path / 'baseline.db'}"
    env = {"DATABASE_URL": url, "SECRET_KEY": "s" * 40, "BASELINE_MODEL_DIR": str(tiny_hf_dir)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, check=True,
                   capture_output=True)
    from serve_app.settings import get_settings

    get_settings.cache_clear()
    from bench.baseline_server import create_baseline_app

    app = create_baseline_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://baseline") as client:
            user = {"username": "baseline_user", "password": "password-123"}
            assert (await client.post("/auth/", json=user)).status_code == 201
            token = (await client.post("/auth/token", data=user)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            one = await client.post("/predict", json={"text": "fine"}, headers=headers)
            batch = await client.post("/predict/batch", json={"texts": ["a", "b"]}, headers=headers)
    get_settings.cache_clear()
    assert one.status_code == 200, one.text
    assert one.json()["label"] in {"sad", "meh", "glad"} and one.json()["id"] == 1
    assert batch.status_code == 200, batch.text
    assert [r["text"] for r in batch.json()["results"]] == ["a", "b"]
