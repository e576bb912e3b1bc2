"""A file run as a job from the Batch tab, in headless Chromium against the real service: the
page uploads it to /jobs, the jobs list follows its progress, survives a reload, and the
result downloads.

The job runs on a Serve instance of this module's own, as a newcomer's service would be: on
the suite's shared instance, after about half an hour of other tests, jobs submitted there
stayed pending in Ray (its dashboard's job API no longer answered with JSON).
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.async_api import expect
from ui_steps import downloaded_csv, signed_in_user

pytestmark = [pytest.mark.browser, pytest.mark.ray]

TEXTS = ["I love this, it works perfectly and I am delighted",
         "Awful quality, it broke on the first day and I want my money back"]
ROWS = 300


@pytest.fixture(scope="module")
def jobs_service(start_serve) -> Iterator[tuple[str, str | None]]:
    """(the page's URL, the Ray dashboard's URL): SERVICE_URL's page when it is set, else a
    fresh instance with a CPU beyond the model's two replicas for the job's scoring actor."""
    if os.environ.get("SERVICE_URL"):
        yield f"{os.environ['SERVICE_URL'].rstrip('/')}/ui/", None
        return
    with start_serve(database="sqlite", num_cpus=3) as instance:
        yield f"{instance.url}/ui/", instance.dashboard_url


def ray_jobs_report(dashboard_url: str | None) -> str:
    """What Ray says of the service's jobs (status, message, driver log tail): why a job
    that never left `queued` did not start."""
    if dashboard_url is None:
        return "(no Ray dashboard known)"
    from bench.ray_auth import dashboard_headers

    headers = dashboard_headers()
    answer = httpx.get(f"{dashboard_url}/api/jobs/", headers=headers, timeout=30)
    if answer.status_code != 200:
        return f"the dashboard's /api/jobs/ answered {answer.status_code}: {answer.text[:2000]}"
    lines = []
    for job in answer.json():
        job_id = job.get("submission_id") or job.get("job_id")
        logs = httpx.get(f"{dashboard_url}/api/jobs/{job_id}/logs", headers=headers, timeout=30)
        tail = logs.json().get("logs", "")[-2000:] if logs.status_code == 200 else logs.text
        lines.append(f"{job_id}: {job.get('status')} {job.get('message')!r}\n{tail}")
    return "\n".join(lines) or "(Ray knows no job)"


async def test_a_file_runs_as_a_job_with_progress_and_its_result_downloads(
        page, screenshots, jobs_service, tmp_path):
    ui_url, ray_dashboard_url = jobs_service
    await signed_in_user(page, ui_url)
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, f"{TEXTS[i % 2]} (review {i})"] for i in range(ROWS))

    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Or a file").set_input_files(path)
    await expect(page.locator("#batch-file-info")).to_contain_text("reviews.csv: 300 texts")
    await page.get_by_label("Run as a job").check()  # a small file, run as a job by choice
    await page.get_by_label("Result format").select_option("csv")
    await page.get_by_role("button", name="Classify all").click()

    job_row = page.locator("#jobs-table tbody tr").first
    await expect(job_row).to_contain_text("reviews.csv")
    await screenshots.take("job-submitted")
    # The row moves from queued/running to succeeded; the statuses it showed on the way.
    seen, deadline = [], time.monotonic() + 240
    while (status := await job_row.get_attribute("data-status")) != "succeeded":
        assert status in ("queued", "running"), await job_row.inner_text()
        if not seen or seen[-1] != status:
            seen.append(status)
        if time.monotonic() > deadline:
            report = await asyncio.to_thread(ray_jobs_report, ray_dashboard_url)
            pytest.fail(f"the job did not finish: {seen}; Ray's jobs:\n{report}")
        await asyncio.sleep(0.3)
    assert seen, "the page never showed the job before it finished"
    bar = page.get_by_role("progressbar", name="Progress of reviews.csv")
    await expect(bar).to_have_attribute("aria-valuenow", str(ROWS))
    await expect(bar).to_have_attribute("aria-valuemax", str(ROWS))
    await expect(job_row).to_contain_text("300 / 300 texts")
    await expect(job_row).to_contain_text("Done")
    await screenshots.take("job-done")

    # The jobs live on the server: after a reload the list shows the job again.
    await page.reload()
    await page.get_by_role("tab", name="Batch").click()
    job_row = page.locator("#jobs-table tbody tr").first
    await expect(job_row).to_have_attribute("data-status", "succeeded")
    await expect(job_row).to_contain_text("reviews.csv")

    name, rows = await downloaded_csv(
        page, lambda: page.get_by_role("button", name="Download the result of reviews.csv").click())
    assert name == "reviews-scored.csv"
    assert len(rows) == ROWS
    assert [int(r["row"]) for r in rows] == list(range(ROWS))
    assert rows[0]["label"] == "positive" and rows[1]["label"] == "negative"

    await page.get_by_role("button", name="Delete the job for reviews.csv").click()
    await expect(page.locator("#jobs-card")).to_be_hidden()
    await screenshots.take("job-deleted")
