"""Bulk jobs over HTTP on a real Ray Serve instance: the upload becomes a Ray job (Job
Submission API) that scores the file on Ray Data and records its progress in the database.

All tests share the suite's Serve instances (SQLite, and MariaDB for the `mysql` case).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import time

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from serve_stack import ServeInstance, signup_and_login, sync_url

from bench.ray_auth import dashboard_headers

pytestmark = pytest.mark.ray

POSITIVE = "I love it, wonderful quality and it works perfectly. Delighted!"
NEGATIVE = "Terrible. It broke on the first day, the worst purchase I have ever made."
NEUTRAL = "The package contains a cable and a manual."
JOB_TIMEOUT_S = 420  # a job waits for a free CPU if the model holds both


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def instance(request) -> ServeInstance:
    name = "serve_instance" if request.param == "sqlite" else "mysql_serve_instance"
    return request.getfixturevalue(name)


def reviews(count: int) -> list[dict]:
    """Rows with an id and a text; every 50th text is empty (a row with an error)."""
    texts = [POSITIVE, NEGATIVE, NEUTRAL]
    return [{"id": f"r{i}", "text": "" if i % 50 == 49 else f"{texts[i % 3]} (#{i})"}
            for i in range(count)]


def as_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "text"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def as_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def ray_job(instance: ServeInstance, submission_id: str) -> dict | None:
    """The job as Ray's own job API lists it (what `ray job list` shows)."""
    response = httpx.get(f"{instance.dashboard_url}/api/jobs/", headers=dashboard_headers(),
                         timeout=30)
    response.raise_for_status()
    return next((j for j in response.json() if j.get("submission_id") == submission_id), None)


async def wait_for_ray_status(instance: ServeInstance, submission_id: str, status: str,
                              timeout_s: float = 60) -> dict:
    """The Ray job once it has `status` (its driver exits a moment after the row is final)."""
    deadline = time.monotonic() + timeout_s
    while (job := ray_job(instance, submission_id)) is None or job["status"] != status:
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.5)
    return job


async def wait_for_job(client, headers, job_id: str, until, timeout_s: float = JOB_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        await asyncio.sleep(0.5)


async def submit(client, headers, name: str, content: bytes, **fields) -> httpx.Response:
    return await client.post("/jobs", headers=headers, files={"file": (name, content)},
                             data=fields)


def predictions_of(instance: ServeInstance, user_id: int) -> int:
    engine = sa.create_engine(sync_url(instance.database_url))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM predictions WHERE user_id = :u"),
                                {"u": user_id}).scalar_one()
    finally:
        engine.dispose()


async def test_a_file_job_runs_as_a_ray_job_and_its_result_downloads(instance):
    rows = reviews(400)
    # SQLite: CSV in, Parquet out, with an API key. MariaDB: JSON Lines in, CSV out.
    on_sqlite = instance.database == "sqlite"
    name, content = ("reviews.csv", as_csv(rows)) if on_sqlite else ("reviews.jsonl",
                                                                       as_jsonl(rows))
    fields = {"column": "text", "keep": "id"} | ({} if on_sqlite else {"format": "csv"})
    async with instance.client(timeout=120) as client:
        user = await signup_and_login(client, prefix="jobs")
        headers = user.headers
        if on_sqlite:
            key = await client.post("/auth/keys", json={"name": "bulk"}, headers=user.headers)
            assert key.status_code == 201, key.text
            headers = {"X-API-Key": key.json()["key"]}

        created = await submit(client, headers, name, content, **fields)
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["status"] == "queued" and job["filename"] == name
        assert job["format"] == ("parquet" if on_sqlite else "csv")
        assert job["keep"] == ["id"] and job["column"] == "text"

        early = await client.get(f"/jobs/{job['id']}/result", headers=headers)
        if early.status_code != 200:  # a 400-row job may well be done by now
            assert early.status_code == 409 and early.json()["detail"]

        done = await wait_for_job(client, headers, job["id"],
                                  lambda j: j["status"] not in ("queued", "running"))
        assert done["status"] == "succeeded", done
        assert done["rows_done"] == done["rows_total"] == 400
        assert done["errors"] == 8  # the empty texts
        assert sum(done["label_counts"].values()) == 392
        assert set(done["label_counts"]) <= {"negative", "neutral", "positive"}
        assert done["texts_per_s"] > 0 and done["model_version"] and done["error"] is None
        assert done["created_at"] <= done["started_at"] <= done["finished_at"]

        listed = await client.get("/jobs", headers=headers)
        assert [j["id"] for j in listed.json()] == [job["id"]]

        result = await client.get(f"/jobs/{job['id']}/result", headers=headers)
        assert result.status_code == 200
        disposition = result.headers["content-disposition"]
        if on_sqlite:
            assert result.headers["content-type"] == "application/vnd.apache.parquet"
            assert 'filename="reviews-scored.parquet"' in disposition
            table = pq.read_table(io.BytesIO(result.content)).to_pylist()
        else:
            assert result.headers["content-type"].startswith("text/csv")
            assert 'filename="reviews-scored.csv"' in disposition
            table = list(csv.DictReader(io.StringIO(result.text)))
        assert [int(r["row"]) for r in table] == list(range(400))
        assert [r["id"] for r in table] == [r["id"] for r in rows]
        by_text = {r["text"]: out for r, out in zip(rows, table)}
        assert by_text[f"{POSITIVE} (#0)"]["label"] == "positive"
        assert by_text[f"{NEGATIVE} (#1)"]["label"] == "negative"
        assert not by_text[""]["label"] and by_text[""]["error"]

        # A Ray job, as the dashboard and `ray job list` show it.
        ray = await wait_for_ray_status(instance, f"sentiment-job-{job['id']}", "SUCCEEDED")
        assert f"-m bulk run-job {job['id']} " in ray["entrypoint"]
        # Bulk rows stay out of the prediction log; the job keeps the counts.
        assert predictions_of(instance, user.id) == 0

        # Another user sees none of it.
        other = await signup_and_login(client, prefix="other")
        for method, path in [("GET", f"/jobs/{job['id']}"), ("GET", f"/jobs/{job['id']}/result"),
                             ("DELETE", f"/jobs/{job['id']}")]:
            response = await client.request(method, path, headers=other.headers)
            assert response.status_code == 404, (method, path, response.text)
        assert (await client.get("/jobs", headers=other.headers)).json() == []

        deleted = await client.delete(f"/jobs/{job['id']}", headers=headers)
        assert deleted.status_code == 204
        assert (await client.get(f"/jobs/{job['id']}", headers=headers)).status_code == 404
        assert (await client.get("/jobs", headers=headers)).json() == []


async def test_a_missing_column_or_an_unsupported_file_is_422_before_any_ray_job(
        serve_instance):
    async with serve_instance.client() as client:
        user = await signup_and_login(client, prefix="badjob")
        missing = await submit(client, user.headers, "reviews.csv", as_csv(reviews(5)),
                               column="body")
        assert missing.status_code == 422
        assert "body" in missing.json()["detail"] and "reviews.csv" in missing.json()["detail"]
        assert "/" not in missing.json()["detail"]  # names the file, not where the store keeps it
        unsupported = await submit(client, user.headers, "reviews.xlsx", b"PK\x03\x04")
        assert unsupported.status_code == 422 and ".csv" in unsupported.json()["detail"]
        unreadable = await submit(client, user.headers, "reviews.parquet", b"not parquet")
        assert unreadable.status_code == 422 and unreadable.json()["detail"]
        bad_format = await submit(client, user.headers, "reviews.csv", as_csv(reviews(5)),
                                  format="xlsx")
        assert bad_format.status_code == 422 and "parquet or csv" in bad_format.json()["detail"]
        clash = await submit(client, user.headers, "reviews.csv",
                             b"text,label\nfine,x\n", keep="label")
        assert clash.status_code == 422 and "'label'" in clash.json()["detail"]
        no_file = await client.post("/jobs", headers=user.headers, data={"column": "text"})
        assert no_file.status_code == 422
        assert (await client.get("/jobs", headers=user.headers)).json() == []


async def test_a_job_outlives_an_ingress_restart_and_is_cancelled_midway(serve_instance):
    """The job keeps running while the ingress replica is killed and replaced; the new
    replica finds it in the database; cancelling it stops its Ray job."""
    rows = reviews(30_000)
    async with serve_instance.client(timeout=120) as client:
        user = await signup_and_login(client, prefix="restart")
        created = await submit(client, user.headers, "big.csv", as_csv(rows), keep="id")
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        running = await wait_for_job(client, user.headers, job_id,
                                     lambda j: j["status"] != "queued" and j["rows_done"] > 0)
        assert running["status"] == "running", running

        (victim,) = serve_instance.cluster.replica_pids("sentiment", "APIIngress")
        os.kill(victim, signal.SIGKILL)
        await asyncio.to_thread(_wait_for_new_ingress, serve_instance, victim)

        # The new replica finds the job; the Ray job went on scoring meanwhile.
        listed = await client.get("/jobs", headers=user.headers)
        assert listed.status_code == 200, listed.text
        (found,) = listed.json()
        assert found["id"] == job_id
        assert found["status"] == "running", found["error"]
        later = await wait_for_job(client, user.headers, job_id,
                                   lambda j: j["rows_done"] > found["rows_done"])
        assert later["rows_total"] == 30_000

        cancelled = await client.delete(f"/jobs/{job_id}", headers=user.headers)
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        await wait_for_ray_status(serve_instance, f"sentiment-job-{job_id}", "STOPPED")
        final = (await client.get(f"/jobs/{job_id}", headers=user.headers)).json()
        assert final["status"] == "cancelled" and final["finished_at"]
        assert final["rows_done"] < 30_000
        result = await client.get(f"/jobs/{job_id}/result", headers=user.headers)
        assert result.status_code == 409
        assert (await client.delete(f"/jobs/{job_id}", headers=user.headers)).status_code == 204


def _wait_for_new_ingress(instance: ServeInstance, victim: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = instance.cluster.replica_pids("sentiment", "APIIngress")
        if pids and victim not in pids:
            try:
                if httpx.get(f"{instance.url}/health", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise TimeoutError("no new ingress replica answered")

