"""`python -m bulk run-job JOB_ID`: the driver of one bulk job submitted by the service.

It runs as a Ray job (the service submits it through Ray's Job Submission API), scores the
job's uploaded file with the pipeline, and keeps the job's row in the database current:
`running` with its start time, then rows done, errors, counts per label and texts/s every
second or so, then `succeeded` (with the result's size) or `failed` with the reason. The row
is the only channel back to the service, so the job outlives any ingress replica.

Every update applies only while the row is still active: once the owner cancelled the job
the driver's late writes change nothing, and a driver that sees the cancel stops scoring.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from serve_app.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED
from serve_app.models import Job, utcnow
from serve_app.settings import get_settings
from serve_app.sqlite_writer import apply_sqlite_pragmas

log = logging.getLogger("bulk.job")

SYNC_DRIVERS = {"sqlite": "sqlite", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
# SQLite: wait this long for the service's writes before giving up on an update.
SQLITE_BUSY_S = 30.0


class JobCancelled(Exception):
    """The row left `running` while the job ran: its owner cancelled it."""


def sync_engine(database_url: str) -> Engine:
    """The service's database through a synchronous driver (the driver is a plain script)."""
    url = make_url(database_url)
    url = url.set(drivername=SYNC_DRIVERS.get(url.get_backend_name(), url.drivername))
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"charset": "utf8mb4"})
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_S})
    sa.event.listen(engine, "connect",
                    lambda conn, _record: apply_sqlite_pragmas(conn, SQLITE_BUSY_S))
    return engine


class JobRow:
    """The job's row; every write is conditional on the status the driver expects."""

    def __init__(self, engine: Engine, job_id: str) -> None:
        self.engine = engine
        self.job_id = job_id

    def load(self) -> Job | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Job, self.job_id)

    def update(self, *, expect: str, **values) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(sa.update(Job).where(Job.id == self.job_id,
                                                       Job.status == expect).values(**values))
        return result.rowcount == 1


def count_rows(input_uri: str) -> int | None:
    """The input's row count, read apart from the scoring (CSV and JSON Lines do not say)."""
    import pyarrow.dataset as pads

    from bulk.sources import input_format, resolve

    fmt = input_format(input_uri)
    filesystem, path = resolve(input_uri)
    return pads.dataset(path, filesystem=filesystem,
                        format="json" if fmt == "jsonl" else fmt).count_rows()


def run_job(row: JobRow, options) -> int:
    """Score the job; returns the process's exit status."""
    from bulk.pipeline import score

    job = row.load()
    if job is None or job.status != QUEUED:  # deleted or cancelled before it started
        return 0
    started = time.monotonic()
    if not row.update(expect=QUEUED, status=RUNNING, started_at=utcnow()):
        return 0
    if job.rows_total is None:
        threading.Thread(target=_record_total, args=(row, job.input_uri), daemon=True).start()

    def on_progress(rows_done: int, errors: int, label_counts: dict[str, int]) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        if not row.update(expect=RUNNING, rows_done=rows_done, errors=errors,
                          label_counts=label_counts, texts_per_s=round(rows_done / elapsed, 1)):
            raise JobCancelled

    try:
        summary = score(job.input_uri, job.result_uri, options, on_progress=on_progress)
    except JobCancelled:
        return 0
    except Exception as exc:
        log.exception("job %s failed", job.id)
        row.update(expect=RUNNING, status=FAILED, error=describe(exc), finished_at=utcnow())
        return 1
    if not row.update(expect=RUNNING, status=SUCCEEDED, rows_done=summary.rows,
                      rows_total=summary.rows, errors=summary.errors,
                      label_counts=summary.label_counts, texts_per_s=summary.texts_per_s,
                      model_version=summary.model_version, finished_at=utcnow(),
                      result_bytes=_size(job.result_uri)):
        _delete(job.result_uri)  # cancelled at the last moment: no result to keep
    return 0


def describe(exc: BaseException) -> str:
    from bulk.pipeline import InputError

    return str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"


def _record_total(row: JobRow, input_uri: str) -> None:
    try:
        row.update(expect=RUNNING, rows_total=count_rows(input_uri))
    except Exception as exc:  # the total is a nicety; the job goes on without it
        log.warning("could not count the rows of %s: %s", input_uri, exc)


def _size(uri: str) -> int | None:
    from bulk.sources import resolve

    filesystem, path = resolve(uri)
    return filesystem.get_file_info(path).size


def _delete(uri: str) -> None:
    from bulk.sources import resolve

    filesystem, path = resolve(uri)
    try:
        filesystem.delete_file(path)
    except OSError:
        pass


def build_parser() -> argparse.ArgumentParser:
    from bulk.pipeline import ScoreOptions

    defaults = ScoreOptions()
    parser = argparse.ArgumentParser(
        prog="python -m bulk run-job",
        description="Run one job of the service's jobs table (submitted as a Ray job); "
                    "DATABASE_URL names the database.")
    parser.add_argument("job_id")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-actors", type=int, default=defaults.max_actors)
    parser.add_argument("--cpus-per-actor", type=float, default=defaults.num_cpus_per_actor)
    parser.add_argument("--gpus-per-actor", type=float, default=defaults.num_gpus_per_actor)
    parser.add_argument("--cpus-per-read", type=float, default=defaults.num_cpus_per_read)
    parser.add_argument("--model-dir", default=None)
    return parser


def _exit(signum, _frame) -> None:
    # `ray job stop` sends SIGTERM: unwind, so the result's temporary file is removed.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    import ray

    from bulk.pipeline import ScoreOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit)
    engine = sync_engine(get_settings().database_url)
    row = JobRow(engine, args.job_id)
    job = row.load()
    if job is None:
        sys.exit(f"no job {args.job_id} in the database")
    options = ScoreOptions(column=job.text_column, keep=list(job.keep_columns),
                           output_format=job.output_format, model_dir=args.model_dir,
                           batch_size=args.batch_size, max_actors=args.max_actors,
                           num_cpus_per_actor=args.cpus_per_actor,
                           num_gpus_per_actor=args.gpus_per_actor,
                           num_cpus_per_read=args.cpus_per_read)
    ray.init(log_to_driver=True)  # inside a Ray job: the job's cluster
    try:
        status = run_job(row, options)
    finally:
        engine.dispose()
    sys.exit(status)


if __name__ == "__main__":
    main()
