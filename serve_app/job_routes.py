"""/jobs: score a whole file as a Ray job; list, follow, download, cancel and delete jobs.

Thin: the rows and files are handled by serve_app/jobs.py, the upload by form_stream.py.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency's types as classes.
import asyncio
import logging
import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import StreamingResponse

from serve_app.auth import AUTH_ERRORS, CurrentUser
from serve_app.form_stream import FormError, FormStream
from serve_app.job_store import UploadTooLarge
from serve_app.jobs import (
    ACTIVE,
    INPUT_SUFFIXES,
    RESULT_TYPES,
    SUCCEEDED,
    JobInputError,
    JobOut,
    Jobs,
    input_suffix,
    new_job,
    ray_submission_id,
    result_filename,
)
from serve_app.schemas import ErrorResponse

log = logging.getLogger(__name__)

JOBS_UNAVAILABLE = "Bulk jobs are not available here: the service runs without Ray."
JOB_NOT_FOUND = "Job not found."
UNSUPPORTED_FILE = (f"Unsupported file type: send one of {', '.join(INPUT_SUFFIXES)} "
                    "(the suffix of the file name decides).")
BAD_FORMAT = "format must be parquet or csv."
BAD_COLUMN = "column and keep name columns of the file: 1 to 255 characters each."
TOO_MANY_JOBS = "You have {n} jobs queued or running, the most allowed: wait for one to end."
STORAGE_FULL = ("Your jobs' files use {used} of your {quota} bytes: delete finished jobs to "
                "make room.")
FILE_TOO_LARGE = "The file exceeds the limit of {limit} bytes."
SUBMIT_FAILED = "The job could not be started on the cluster; retry later."
COLUMN_MAX = 255
STORAGE_LIMIT = "storage"

ERRORS = {
    **AUTH_ERRORS,
    404: {"model": ErrorResponse, "description": JOB_NOT_FOUND},
    422: {"model": ErrorResponse, "description": "Not a job id"},
}

router = APIRouter(prefix="/jobs", tags=["jobs"])


async def get_jobs(request: Request) -> Jobs:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None or jobs.runner is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, JOBS_UNAVAILABLE,
                            headers={"Retry-After": "60"})
    return jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]


JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the job's id")]


async def owned_job(job_id: JobId, user: CurrentUser, jobs: JobsDep):
    """The caller's job; another user's is as absent as one that never existed."""
    job = await jobs.get(job_id=job_id, user_id=user.id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, JOB_NOT_FOUND)
    return job


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def parse_options(fields: dict[str, str]) -> tuple[str, list[str], str]:
    column = fields.get("column", "").strip() or "text"
    keep = [name.strip() for name in fields.get("keep", "").split(",") if name.strip()]
    output_format = fields.get("format", "").strip().lower() or "parquet"
    if output_format not in RESULT_TYPES:
        raise _unprocessable(BAD_FORMAT)
    if any(len(name) > COLUMN_MAX for name in [column, *keep]):
        raise _unprocessable(BAD_COLUMN)
    return column, list(dict.fromkeys(keep)), output_format


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses={
    **AUTH_ERRORS,
    413: {"model": ErrorResponse, "description": "The file exceeds MAX_UPLOAD_BYTES or your "
                                                 "storage"},
    422: {"model": ErrorResponse, "description": "Unreadable or unsupported file, a missing "
                                                 "column, or a bad option"},
    429: {"model": ErrorResponse, "description": "Too many jobs queued or running"},
    503: {"model": ErrorResponse, "description": "The cluster did not take the job"},
}, openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "CSV (with a header), JSON Lines or Parquet"},
        "column": {"type": "string", "default": "text", "description": "the text's column"},
        "keep": {"type": "string", "description": "columns copied to the result, e.g. id,date"},
        "format": {"type": "string", "enum": ["parquet", "csv"], "default": "parquet"},
    }}}}}})
async def create_job(request: Request, user: CurrentUser, jobs: JobsDep) -> JobOut:
    """Upload a file (multipart, field `file`) and score it as a Ray job: 202 with the job.
    The file is streamed to the job store, then checked (format, columns) before the job
    starts; follow it at `GET /jobs/{id}`."""
    settings = jobs.settings
    active = await jobs.active_count(user_id=user.id)
    if active >= settings.max_running_jobs_per_user:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY_JOBS.format(n=active),
                            headers={"Retry-After": str(settings.retry_after_seconds)})
    used = await jobs.stored_bytes(user_id=user.id)
    room = settings.max_job_bytes_per_user - used
    if room <= 0:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, STORAGE_FULL.format(
            used=used, quota=settings.max_job_bytes_per_user))
    limit = min(settings.max_upload_bytes, room)
    try:
        form = FormStream(request)
        filename = (await form.start()).replace("\\", "/").rsplit("/", 1)[-1][:255]
    except FormError as exc:
        raise _unprocessable(str(exc)) from None
    suffix = input_suffix(filename)
    if suffix is None:
        raise _unprocessable(UNSUPPORTED_FILE)

    job_id = uuid.uuid4().hex
    store = jobs.store
    input_path = store.path(job_id, f"input{suffix}")
    try:
        try:
            size = await store.receive(input_path, form.file_chunks(), limit=limit)
        except UploadTooLarge:
            detail = (FILE_TOO_LARGE.format(limit=limit) if limit == settings.max_upload_bytes
                      else STORAGE_FULL.format(used=used, quota=settings.max_job_bytes_per_user))
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail) from None
        except FormError as exc:
            raise _unprocessable(str(exc)) from None
        column, keep, output_format = parse_options(form.fields)
        input_uri = store.uri(input_path)
        try:
            rows_total = await asyncio.to_thread(jobs.runner.check_input, input_uri, column, keep)
        except JobInputError as exc:  # named by the caller's file name, not the store's path
            raise _unprocessable(str(exc).replace(input_uri, filename)) from None
        job = new_job(job_id=job_id, user_id=user.id, filename=filename, column=column,
                      keep=keep, output_format=output_format, input_uri=input_uri,
                      result_uri=store.uri(store.path(job_id, f"result.{output_format}")),
                      input_bytes=size, rows_total=rows_total,
                      ray_job_id=ray_submission_id(job_id))
        await jobs.add(job)
    except BaseException:
        await asyncio.to_thread(store.delete_job, job_id)
        raise
    try:
        await asyncio.to_thread(jobs.runner.submit, job.id, job.ray_job_id)
    except Exception as exc:
        log.error("submitting job %s failed: %s", job.id, exc)
        await jobs.delete(job)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, SUBMIT_FAILED,
                            headers={"Retry-After": str(settings.retry_after_seconds)}) from None
    return JobOut.of(job)


@router.get("", response_model=list[JobOut], responses=AUTH_ERRORS)
async def list_jobs(user: CurrentUser, jobs: JobsDep) -> list[JobOut]:
    """Your jobs, newest first (the latest 100)."""
    return [JobOut.of(job) for job in await jobs.of_user(user_id=user.id)]


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(job=Depends(owned_job)) -> JobOut:
    return JobOut.of(job)


@router.get("/{job_id}/result", responses={
    **ERRORS,
    200: {"content": {media: {} for media in RESULT_TYPES.values()},
          "description": "The scored file"},
    409: {"model": ErrorResponse, "description": "The job has not succeeded"},
})
async def get_result(jobs: JobsDep, job=Depends(owned_job)) -> StreamingResponse:
    """The scored file, streamed: Parquet or CSV as the job was asked."""
    if job.status != SUCCEEDED:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"The job is {job.status}: its result is ready once it succeeds.")
    path = jobs.store.path_of(job.result_uri)
    size = await asyncio.to_thread(jobs.store.size, path)
    if size is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The job's result file is gone.")
    name = result_filename(job)
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {"Content-Length": str(size), "Content-Disposition":
               f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"}
    return StreamingResponse(jobs.store.read(path), media_type=RESULT_TYPES[job.output_format],
                             headers=headers)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses={
    **ERRORS,
    202: {"model": JobOut, "description": "The running job is being cancelled"},
    204: {"description": "The finished job and its files are deleted"},
})
async def delete_job(jobs: JobsDep, job=Depends(owned_job)) -> Response:
    """Cancel a queued or running job (202: its Ray job stops), or delete a finished one
    with its files (204)."""
    if job.status in ACTIVE:
        cancelled = await jobs.cancel(job)
        return Response(JobOut.of(cancelled).model_dump_json(), status_code=202,
                        media_type="application/json")
    await jobs.delete(job)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
