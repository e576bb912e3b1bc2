"""The pieces of POST /jobs that need no cluster: the multipart body read as it streams, the job
store's publish-when-complete, and the web layer's freedom from Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from serve_app.form_stream import FormError, FormStream
from serve_app.job_store import JobStore, UploadTooLarge

REPO_ROOT = Path(__file__).resolve().parents[2]


def multipart_request(body: bytes, content_type: str, chunk: int = 7) -> Request:
    """A Starlette request whose body arrives in small chunks, as over a socket."""
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive():
        data = parts.pop(0)
        return {"type": "http.request", "body": data, "more_body": bool(parts)}

    scope = {"type": "http", "method": "POST", "path": "/jobs", "headers": [
        (b"content-type", content_type.encode())]}
    return Request(scope, receive)


def encoded(files: dict, data: dict) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/jobs", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def test_the_file_streams_through_and_fields_on_either_side_of_it_are_kept():
    content = b"id,text\n" + b"".join(b"%d,review number %d\n" % (i, i) for i in range(2000))
    body, content_type = encoded({"file": ("reviews.csv", content)},
                                 {"column": "text", "keep": "id", "format": "csv"})
    form = FormStream(multipart_request(body, content_type))
    assert await form.start() == "reviews.csv"
    received = [chunk async for chunk in form.file_chunks()]
    assert len(received) > 1, "the file came in one piece: it was held, not streamed"
    assert b"".join(received) == content
    assert form.fields == {"column": "text", "keep": "id", "format": "csv"}


@pytest.mark.parametrize(("body", "content_type"), [
    (b"column=text", "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data; name=\"column\"\r\n\r\ntext\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),  # no file part
    (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\nid,te",
     "multipart/form-data; boundary=b"),  # cut off inside the file
])
async def test_a_body_that_is_not_the_form_asked_for_is_a_form_error(body, content_type):
    with pytest.raises(FormError):
        form = FormStream(multipart_request(body, content_type))
        await form.start()
        async for _ in form.file_chunks():
            pass


async def chunks_of(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_an_upload_is_published_only_once_complete(tmp_path):
    store = JobStore(str(tmp_path / "jobs"))
    path = store.path("a" * 32, "input.csv")
    seen_while_writing = []

    async def watched(data: bytes):
        async for chunk in chunks_of(data):
            seen_while_writing.append(store.size(path))
            yield chunk

    size = await store.receive(path, watched(b"x" * 10_000), limit=20_000)
    assert size == 10_000 and store.size(path) == 10_000
    assert set(seen_while_writing) == {None}, "the file was visible before it was complete"
    assert b"".join([c async for c in store.read(path)]) == b"x" * 10_000

    over = store.path("b" * 32, "input.csv")
    with pytest.raises(UploadTooLarge):
        await store.receive(over, chunks_of(b"y" * 30_000), limit=20_000)
    assert store.size(over) is None and store.size(over + ".part") is None

    store.delete_job("a" * 32)
    assert store.size(path) is None


def test_a_uri_store_names_files_with_their_scheme(tmp_path):
    store = JobStore(f"file://{tmp_path}/jobs")
    path = store.path("c" * 32, "result.parquet")
    assert store.uri(path) == path and store.path_of(store.uri(path)) == path
    assert (tmp_path / "jobs").is_dir()


def test_the_web_app_with_its_job_routes_imports_no_ray():
    check = ("import sys, serve_app.app, serve_app.job_routes; "
             "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]"
