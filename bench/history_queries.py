"""The history routes with a million rows in the log: /data pages deep in the log by before_id
against offset, /data/summary, and the memory of a full /data/export.

    .venv/bin/python -m bench.history_queries [--database sqlite|mysql] [--rows 1000000]

Builds a fresh database (a temporary SQLite file, or a new database on the MariaDB at
TEST_MYSQL_URL / 127.0.0.1:3306, dropped afterwards) at the current schema, fills it with
``--rows`` predictions of one user over a year plus a tenth as many of another user, and calls
the real app served by uvicorn in this process over local HTTP (no model). Prints p50/p99 per
request, and the process's memory while the whole export streams to a client that keeps
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from bench.local_ports import free_port
from serve_app.app import create_app
from serve_app.db import upgrade_to_head
from serve_app.models import Prediction
from serve_app.settings import Settings

LABELS = ("negative", "neutral", "positive")
START = datetime(2025, 1, 1)
YEAR_S = 365 * 24 * 3600
PASSWORD = "correct horse battery"


@contextmanager
def database(kind: str):
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/history.db"
        return
    import pymysql

    server = make_url(os.environ.get("TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306"))
    name = f"sentiment_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=server.host, port=server.port or 3306, user=server.username,
                            password=server.password or "")
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def fill(url: str, user_ids: dict[int, int], chunk: int = 20_000) -> None:
    """Rows of the users interleaved in time, ids in time order, as the log grows."""
    sync_url = make_url(url).set(drivername="sqlite" if "sqlite" in url else "mysql+pymysql")
    engine = create_engine(sync_url)
    total = sum(user_ids.values())
    owners = [uid for uid, n in user_ids.items() for _ in range(n)]
    random.Random(1).shuffle(owners)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA journal_mode=WAL"))
        for start in range(0, total, chunk):
            conn.execute(insert(Prediction), [
                dict(user_id=owners[i], text=f"review {i}: the food was fine, the wait was long",
                     label=LABELS[i * 7 % 3], score=0.8, model_version="bench@00000000",
                     latency_ms=5.0, created_at=START + timedelta(seconds=i * YEAR_S // total))
                for i in range(start, min(total, start + chunk))])
    engine.dispose()


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):8.1f} ms   p99 {p99:8.1f} ms   (n={len(ms)})"


async def timed(client, headers, path: str, params_list: list[dict]) -> list[float]:
    times = []
    for params in params_list:
        t0 = time.perf_counter()
        response = await client.get(path, headers=headers, params=params)
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
    return times


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def export_memory(client, headers) -> tuple[int, float, float, float]:
    """Rows, seconds, RSS before and the highest RSS seen while streaming the whole export."""
    before = peak = rss_mib()
    rows, started = 0, time.perf_counter()
    async with client.stream("GET", "/data/export", headers=headers) as response:
        async for chunk in response.aiter_bytes():
            rows += chunk.count(b"\n")
            peak = max(peak, rss_mib())
    return rows - 1, time.perf_counter() - started, before, peak


async def measure(url: str, rows: int, samples: int) -> None:
    async def never(texts):  # the history routes never call the model
        raise RuntimeError("not used")

    settings = Settings(database_url=url, secret_key="bench-" + "k" * 40, redis_url=None)
    app = create_app(never, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            users = {}
            for name in ("alice", "bob"):
                assert (await client.post("/auth/", json={"username": name,
                                                          "password": PASSWORD})).is_success
                token = (await client.post("/auth/token", data={
                    "username": name, "password": PASSWORD})).json()["access_token"]
                users[name] = {"Authorization": f"Bearer {token}"}
            async with app.state.services.sessions() as session:
                ids = dict((await session.execute(text("SELECT username, id FROM users"))).all())
            started = time.perf_counter()
            await asyncio.to_thread(fill, url, {ids["alice"]: rows, ids["bob"]: rows // 10})
            print(f"filled {rows:,} rows of alice and {rows // 10:,} of bob "
                  f"in {time.perf_counter() - started:.0f} s")
            alice = users["alice"]

            newest = (await client.get("/data", headers=alice, params={"limit": 1})).json()[0]["id"]
            rng = random.Random(2)
            # Pages deep in the log: 80-99% of alice's rows are newer than the page.
            depths = [rng.randint(int(rows * 0.8), int(rows * 0.99)) for _ in range(samples)]
            total = rows + rows // 10
            before_ids = [max(1, newest - int(d * total / rows)) for d in depths]
            cases = [
                ("/data first page", "/data", [{"limit": 50}] * samples),
                ("/data deep, before_id", "/data",
                 [{"limit": 50, "before_id": b} for b in before_ids]),
                ("/data deep, offset", "/data", [{"limit": 50, "offset": d} for d in depths]),
                ("/data label=neutral deep, before_id", "/data",
                 [{"limit": 50, "label": "neutral", "before_id": b} for b in before_ids]),
                ("/data/summary day, whole year", "/data/summary", [{"bucket": "day"}] * samples),
                ("/data/summary hour, whole year", "/data/summary",
                 [{"bucket": "hour"}] * max(3, samples // 5)),
                ("/data/summary hour, one week", "/data/summary",
                 [{"bucket": "hour", "since": (START + timedelta(days=d)).isoformat(),
                   "until": (START + timedelta(days=d + 7)).isoformat()}
                  for d in (rng.randint(0, 350) for _ in range(samples))]),
            ]
            for name, path, params in cases:
                print(f"{name:38s} {percentiles(await timed(client, alice, path, params))}")
            exported, seconds, before, peak = await export_memory(client, alice)
            print(f"/data/export of {exported:,} rows: {seconds:.1f} s, RSS {before:.0f} MiB "
                  f"before, at most {peak:.0f} MiB while streaming (+{peak - before:.0f} MiB)")
    finally:
        server.should_exit = True
        await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the measured user")
    parser.add_argument("--samples", type=int, default=100, help="requests per case")
    args = parser.parse_args(argv)
    with database(args.database) as url:
        upgrade_to_head(url)
        print(f"{args.database}: {make_url(url).render_as_string(hide_password=True)}")
        asyncio.run(measure(url, args.rows, args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
