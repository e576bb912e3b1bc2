"""The service's bulk jobs as Ray jobs: submitted, stopped and read through Ray's Job
Submission API, so each shows in the Ray dashboard and in `ray job list`.

Built inside the ingress replica and handed to `create_app` (serve_app never imports Ray).
The client is pointed at the GCS of the cluster this replica runs in, which names its
dashboard: left to guess, Ray picks the latest cluster started on the machine, which need not
be this one. It sends the cluster's token (RAY_AUTH_MODE=token) by itself.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from pathlib import Path

import ray
from ray.job_submission import JobStatus, JobSubmissionClient
from sqlalchemy.engine import make_url

from serve_app.jobs import CANCELLED, FAILED, SUCCEEDED, JobInputError, RayOutcome
from serve_app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
# The replica's settings the job's driver and its actors read too (scoring, model, database).
PASSED_ENV = ("LONG_TEXT", "MAX_TEXT_CHARS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
              "TOKENIZERS_PARALLELISM", "HF_HOME")
OUTCOMES = {JobStatus.SUCCEEDED: SUCCEEDED, JobStatus.FAILED: FAILED,
            JobStatus.STOPPED: CANCELLED}


def absolute_database_url(url: str) -> str:
    """A relative SQLite path made absolute: the driver may start in another directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database \
            and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        parsed = parsed.set(database=str(Path(parsed.database).resolve()))
    return parsed.render_as_string(hide_password=False)


class RayJobSubmitter:
    """serve_app.jobs.JobRunner on Ray's Job Submission API."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self._settings = settings
        self._address = address  # None: the cluster this process is in
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()

    def _jobs(self) -> JobSubmissionClient:
        with self._lock:  # called from worker threads
            if self._client is None:
                self._client = JobSubmissionClient(
                    self._address or ray.get_runtime_context().gcs_address)
            return self._client

    def check_input(self, input_uri: str, column: str, keep: list[str]) -> int | None:
        from bulk.pipeline import ROW_COLUMN, InputError, check_input, model_labels
        from bulk.scorer import result_schema

        try:
            rows = check_input(input_uri, column, keep)
        except InputError as exc:
            raise JobInputError(str(exc)) from None
        # A kept column named like one of the result's would fail the job once started.
        taken = {ROW_COLUMN, *result_schema(model_labels(self._settings.job_model_dir)).names}
        if clash := [name for name in keep if name in taken]:
            raise JobInputError(f"cannot keep {', '.join(map(repr, clash))}: the result has a "
                                "column of that name")
        return rows

    def submit(self, job_id: str, submission_id: str) -> None:
        self._jobs().submit_job(
            entrypoint=self.entrypoint(job_id), submission_id=submission_id,
            runtime_env={"env_vars": self.driver_env()},
            metadata={"sentiment_job_id": job_id},
            entrypoint_num_cpus=0,  # the driver only reads, counts and writes; actors score
        )

    def stop(self, ray_job_id: str) -> None:
        self._jobs().stop_job(ray_job_id)

    def outcome(self, ray_job_id: str) -> RayOutcome | None:
        try:
            info = self._jobs().get_job_info(ray_job_id)
        except RuntimeError as exc:
            if "status code 404" in str(exc):  # the cluster was replaced and forgot the job
                return RayOutcome(FAILED, "the Ray cluster no longer knows this job")
            raise
        status = OUTCOMES.get(JobStatus(info.status))
        return None if status is None else RayOutcome(status, info.message or str(info.status))

    def entrypoint(self, job_id: str) -> str:
        s = self._settings
        command = [sys.executable, "-m", "bulk", "run-job", job_id,
                   "--batch-size", str(s.job_batch_size), "--max-actors", str(s.job_max_actors),
                   "--cpus-per-actor", str(s.job_cpus_per_actor),
                   "--gpus-per-actor", str(s.job_gpus_per_actor),
                   "--cpus-per-read", str(s.job_cpus_per_read)]
        if s.job_model_dir:
            command += ["--model-dir", s.job_model_dir]
        # The replica's directory, so that relative paths in settings mean the same there.
        return f"cd {shlex.quote(os.getcwd())} && exec {shlex.join(command)}"

    def driver_env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env["DATABASE_URL"] = absolute_database_url(self._settings.database_url)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return env
