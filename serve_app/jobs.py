"""Bulk jobs as the service sees them: rows in the `jobs` table, files in the job store, and a
runner that starts and stops the Ray jobs doing the work.

The runner is injected (the Ray wiring passes one built on Ray's Job Submission API), so this
module stays free of Ray. The Ray job's driver reports progress and its outcome in the row;
the service reads the row, and asks the runner only to notice a driver that died silently.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from serve_app.job_store import JobStore
from serve_app.models import Job, utcnow
from serve_app.schemas import UtcDatetime
from serve_app.settings import Settings
from serve_app.write_path import WritePath

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING)
# Input formats by file suffix, as the pipeline reads them.
INPUT_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
RESULT_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
DRIVER_LOST = "The job's process ended without reporting an outcome"


class JobInputError(ValueError):
    """The uploaded file cannot be scored as asked (unreadable, unsupported, no such column)."""


@dataclass(frozen=True)
class RayOutcome:
    """How a Ray job ended: `status` is succeeded, failed or cancelled."""

    status: str
    message: str


class JobRunner(Protocol):
    """Blocking calls; the service runs them in threads."""

    def check_input(self, input_uri: str, column: str, keep: list[str]) -> int | None:
        """Raise JobInputError unless the file can be read and has the columns; the row count
        when cheaply known."""

    def submit(self, job_id: str, submission_id: str) -> None:
        """Start the job's Ray job under this submission id."""

    def stop(self, ray_job_id: str) -> None: ...

    def outcome(self, ray_job_id: str) -> RayOutcome | None:
        """None while the Ray job is pending or running."""


class JobOut(BaseModel):
    id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    filename: str
    column: str
    keep: list[str]
    format: str = Field(description="of the result: parquet or csv")
    rows_done: int
    rows_total: int | None = Field(description="null until known")
    errors: int = Field(description="rows that could not be scored (their `error` column)")
    label_counts: dict[str, int]
    texts_per_s: float | None
    model_version: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None = Field(description="why a job failed")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(id=job.id, status=job.status, filename=job.filename, column=job.text_column,
                   keep=job.keep_columns, format=job.output_format, rows_done=job.rows_done,
                   rows_total=job.rows_total, errors=job.errors,
                   label_counts=job.label_counts or {}, texts_per_s=job.texts_per_s,
                   model_version=job.model_version, created_at=job.created_at,
                   started_at=job.started_at, finished_at=job.finished_at, error=job.error)


def input_suffix(filename: str) -> str | None:
    suffix = posixpath.splitext(filename.lower())[1]
    return suffix if suffix in INPUT_SUFFIXES else None


def result_filename(job: Job) -> str:
    stem = posixpath.splitext(job.filename)[0] or "result"
    return f"{stem}-scored.{job.output_format}"


@dataclass
class Jobs:
    settings: Settings
    store: JobStore
    runner: JobRunner | None
    sessions: async_sessionmaker[AsyncSession]
    writes: WritePath

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, *, job_id: str, user_id: int) -> Job | None:
        async with self.sessions() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id,
                                                         Job.user_id == user_id))
        return await self._reconciled(job) if job is not None else None

    async def of_user(self, *, user_id: int, limit: int = 100) -> list[Job]:
        async with self.sessions() as session:
            jobs = list(await session.scalars(
                select(Job).where(Job.user_id == user_id)
                .order_by(Job.created_at.desc()).limit(limit)))
        return list(await asyncio.gather(*(self._reconciled(job) for job in jobs)))

    async def active_count(self, *, user_id: int) -> int:
        async with self.sessions() as session:
            return await session.scalar(select(func.count()).select_from(Job).where(
                Job.user_id == user_id, Job.status.in_(ACTIVE))) or 0

    async def stored_bytes(self, *, user_id: int) -> int:
        async with self.sessions() as session:
            total = await session.scalar(
                select(func.sum(Job.input_bytes + func.coalesce(Job.result_bytes, 0)))
                .where(Job.user_id == user_id))
        return int(total or 0)

    # ---- writes --------------------------------------------------------------------------

    async def add(self, job: Job) -> None:
        async with self.sessions() as session:
            session.add(job)
            async with self.writes.turn():
                await session.commit()

    async def delete(self, job: Job) -> None:
        """The row, then its files (a row without files would offer a result that is gone)."""
        async with self.sessions() as session:
            async with self.writes.turn():
                await session.execute(Job.__table__.delete().where(Job.id == job.id))
                await session.commit()
        await asyncio.to_thread(self.store.delete_job, job.id)

    async def cancel(self, job: Job) -> Job:
        """Mark an active job cancelled, then stop its Ray job."""
        if await self._finish(job.id, status=CANCELLED, error=None) and job.ray_job_id:
            try:
                await asyncio.to_thread(self.runner.stop, job.ray_job_id)
            except Exception as exc:  # marked cancelled already: the driver stops at its next look
                log.warning("stopping Ray job %s failed: %s", job.ray_job_id, exc)
        return await self.get(job_id=job.id, user_id=job.user_id) or job

    async def _finish(self, job_id: str, *, status: str, error: str | None) -> bool:
        """Move an active job to a final status; False if it had already finished."""
        async with self.sessions() as session:
            async with self.writes.turn():
                result = await session.execute(
                    update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                    .values(status=status, error=error, finished_at=utcnow()))
                await session.commit()
        return result.rowcount == 1

    async def _reconciled(self, job: Job) -> Job:
        """An active job whose Ray job has ended without a word: the row says so from now on."""
        if job.status not in ACTIVE or not job.ray_job_id or self.runner is None:
            return job
        try:
            outcome = await asyncio.to_thread(self.runner.outcome, job.ray_job_id)
        except Exception as exc:  # Ray unreachable: show the row as it stands
            log.warning("could not read Ray job %s: %s", job.ray_job_id, exc)
            return job
        if outcome is None:
            return job
        status = CANCELLED if outcome.status == CANCELLED else FAILED
        error = None if status == CANCELLED else f"{DRIVER_LOST}: {outcome.message}"
        await self._finish(job.id, status=status, error=error)
        async with self.sessions() as session:
            return await session.get(Job, job.id) or job


def new_job(*, job_id: str, user_id: int, filename: str, column: str, keep: list[str],
            output_format: str, input_uri: str, result_uri: str, input_bytes: int,
            rows_total: int | None, ray_job_id: str) -> Job:
    return Job(id=job_id, user_id=user_id, status=QUEUED, filename=filename, text_column=column,
               keep_columns=keep, output_format=output_format, input_uri=input_uri,
               result_uri=result_uri, input_bytes=input_bytes, rows_total=rows_total,
               ray_job_id=ray_job_id, rows_done=0, errors=0, label_counts={},
               created_at=utcnow())


def ray_submission_id(job_id: str) -> str:
    """The Ray job's id, as `ray job list` and the dashboard show it."""
    return f"sentiment-job-{job_id}"
