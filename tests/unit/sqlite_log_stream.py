"""Another process writing to the service's SQLite file: prediction-log commits, back to back.

    python tests/unit/sqlite_log_stream.py DATABASE_URL USER_ID SECONDS TASKS

Runs the service's own prediction log (group commit through the write path), fed by TASKS
tasks that each write one row after another, for SECONDS; prints "writing" once it started
and the number of rows it committed at the end. Used by test_sqlite_writers.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from serve_app.db import (  # noqa: E402
    PredictionLog,
    create_engine,
    create_session_factory,
    create_write_path,
)
from serve_app.models import utcnow  # noqa: E402
from serve_app.settings import Settings  # noqa: E402


def prediction_row(user_id: int, text: str) -> dict:
    return dict(user_id=user_id, text=text, label="neutral", score=0.5, model_version="test@0",
                latency_ms=1.0, created_at=utcnow())


async def stream_commits(log: PredictionLog, user_id: int, seconds: float, tasks: int,
                         tag: str) -> None:
    """TASKS writers committing one row after another through `log` for `seconds`."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def writer(i: int) -> None:
        n = 0
        while loop.time() < stop:
            await log.write([prediction_row(user_id, f"{tag} {i}-{n}")])
            n += 1

    await asyncio.gather(*(writer(i) for i in range(tasks)))


async def main(url: str, user_id: int, seconds: float, tasks: int) -> None:
    settings = Settings(database_url=url, secret_key="s" * 40)
    engine = create_engine(settings)
    writes = create_write_path(settings)
    log = PredictionLog(create_session_factory(engine), writes=writes)
    log.start()
    print("writing", flush=True)
    await stream_commits(log, user_id, seconds, tasks, "other process")
    await log.close()
    await engine.dispose()
    writes.close()
    print(log.rows_written, flush=True)


if __name__ == "__main__":
    url, user_id, seconds, tasks = sys.argv[1:5]
    asyncio.run(main(url, int(user_id), float(seconds), int(tasks)))
