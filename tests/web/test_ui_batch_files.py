"""The Batch tab with files, end to end in headless Chromium against the real running service:
a file of 1,000 lines in chunks with a moving progress bar, Stop, overload retries, CSV files
with quoted fields, and Ctrl+Enter."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest
from playwright.async_api import expect
from ui_steps import api_get, downloaded_csv, signed_in_user

pytestmark = [pytest.mark.browser, pytest.mark.ray]

TEMPLATES = [
    ("I love this, it works perfectly and I am delighted", "positive"),
    ("Awful quality, it broke on the first day and I want my money back", "negative"),
    ("Fantastic service, friendly staff and a wonderful experience", "positive"),
    ("The worst purchase I have ever made, terrible and useless", "negative"),
]
PROGRESS_BAR = "#batch-progress-bar"


def review_lines(count: int) -> list[str]:
    return [f"{TEMPLATES[i % len(TEMPLATES)][0]} (review {i})" for i in range(count)]


async def service_limits(page, ui_url: str) -> dict:
    return (await (await page.request.get(f"{ui_url}../info")).json())["limits"]


async def record_progress(page) -> None:
    """Keep every value the progress bar's aria-valuenow takes, in window.progressSeen."""
    await page.evaluate("""(selector) => {
        const bar = document.querySelector(selector);
        window.progressSeen = [];
        new MutationObserver(() => window.progressSeen.push(Number(bar.getAttribute('aria-valuenow'))))
            .observe(bar, { attributes: true, attributeFilter: ['aria-valuenow'] });
    }""", PROGRESS_BAR)


def batch_requests(page) -> list:
    """The /predict/batch POSTs the page sends from now on."""
    sent: list = []
    page.on("request", lambda r: sent.append(r)
            if r.method == "POST" and r.url.endswith("/predict/batch") else None)
    return sent


async def test_a_file_of_1000_lines_runs_in_chunks_to_completion_and_downloads_as_csv(
        page, screenshots, ui_url, tmp_path):
    await signed_in_user(page, ui_url)
    limits = await service_limits(page, ui_url)
    lines = review_lines(1000)
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    answered: list[int] = []
    page.on("response", lambda r: answered.append(len(json.loads(r.request.post_data)["texts"]))
            if r.url.endswith("/predict/batch") and r.ok else None)

    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Or a file").set_input_files(path)
    await expect(page.locator("#batch-file-info")).to_contain_text("reviews.txt: 1,000 texts")
    await expect(page.get_by_label("Texts, one per line")).to_be_disabled()  # the file is used
    await record_progress(page)
    await page.get_by_role("button", name="Classify all").click()
    bar = page.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuemax", "1000")
    await expect(page.locator("#batch-progress")).to_have_attribute("data-state", "done", timeout=180_000)
    await expect(bar).to_have_attribute("aria-valuenow", "1000")
    await expect(page.locator("#batch-progress-count")).to_have_text("1,000 / 1,000 texts")
    await expect(page.locator("#batch-progress-stats")).to_have_text(re.compile(r"^[\d.]+ texts/s$"))
    await screenshots.take("file-done")

    # The bar moved through the run, chunk by chunk, never backwards.
    seen = await page.evaluate("window.progressSeen")
    assert seen == sorted(seen) and seen[-1] == 1000, seen
    assert len(set(seen) - {0, 1000}) >= 1000 // limits["max_batch_texts"] - 2, seen
    # Chunks within the service's batch limit; every text answered exactly once.
    assert answered and max(answered) <= limits["max_batch_texts"], answered
    assert sum(answered) == 1000 and len(answered) == math.ceil(1000 / limits["max_batch_texts"])

    # Results come a page at a time.
    await expect(page.locator("#batch-summary")).to_have_text("1,000 results")
    rows = page.locator("#batch-table tbody tr")
    await expect(rows).to_have_count(50)
    await expect(page.locator("#batch-range")).to_have_text("Rows 1–50 of 1,000")
    await page.get_by_role("button", name="Next →").click()
    await expect(page.locator("#batch-range")).to_have_text("Rows 51–100 of 1,000")
    await expect(rows.locator(".cell-text")).to_have_text(lines[50:100])

    filename, table = await downloaded_csv(
        page, page.get_by_role("button", name="Download CSV").click)
    assert re.fullmatch(r"sentiment-batch-[\d-]+T[\d-]+\.csv", filename), filename
    assert [row["text"] for row in table] == lines
    assert [row["line"] for row in table] == [str(i) for i in range(1, 1001)]
    assert {row["windows"] for row in table} == {"1"}
    for row, (_, expected) in zip(table, TEMPLATES * 250, strict=True):
        assert row["label"] == expected, row
        assert float(row[f"p_{expected}"]) == pytest.approx(float(row["score"]))


async def test_stop_half_way_keeps_the_answers_so_far_and_sends_nothing_more(
        page, screenshots, ui_url, service_url, tmp_path):
    await signed_in_user(page, ui_url)
    limits = await service_limits(page, ui_url)
    lines = review_lines(1000)
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(lines), encoding="utf-8")

    async def slow_network(route):
        # A slow link, so that half-way lasts long enough to press Stop; the service answers.
        await asyncio.sleep(0.4)
        try:
            await route.continue_()
        except Exception:  # the page gave up on this request (Stop): nothing to forward
            pass

    await page.route("**/predict/batch", slow_network)
    sent = batch_requests(page)
    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Or a file").set_input_files(path)
    await page.get_by_role("button", name="Classify all").click()
    stop = page.get_by_role("button", name="Stop")
    await expect(stop).to_be_focused()  # the button pressed is disabled; Stop is next at hand
    await page.wait_for_function(
        "n => Number(document.querySelector('#batch-progress-bar').getAttribute('aria-valuenow')) >= n",
        arg=500, timeout=180_000)
    await stop.click()
    await expect(page.locator("#batch-progress")).to_have_attribute("data-state", "stopped")
    await expect(stop).to_be_hidden()
    done = int(await page.get_by_role("progressbar").get_attribute("aria-valuenow"))
    assert 500 <= done < 1000, done
    await screenshots.take("stopped")

    requests_at_stop = len(sent)
    await page.wait_for_timeout(1500)
    assert len(sent) == requests_at_stop, "no chunk is sent after Stop"

    await expect(page.locator("#batch-summary")).to_have_text(f"{done:,} of 1,000 texts classified")
    await expect(page.locator("#announce")).to_contain_text(f"Stopped after {done} of 1000 texts.")
    _, table = await downloaded_csv(page, page.get_by_role("button", name="Download CSV").click)
    assert len(table) == done
    assert all(row["text"] == lines[int(row["line"]) - 1] for row in table)
    # The log holds what was answered, plus at most the chunks that were on the wire.
    export = await api_get(page, service_url, "/data/export")
    logged = len((await export.text()).strip().splitlines()) - 1
    assert done <= logged <= done + 2 * limits["max_batch_texts"], (done, logged)

    # Another run starts cleanly after a stop.
    await page.unroute("**/predict/batch")
    await page.get_by_role("button", name="Remove file").click()
    await page.get_by_label("Texts, one per line").fill("I love it.\nI hate it.")
    await page.get_by_role("button", name="Classify all").click()
    await expect(page.locator("#batch-summary")).to_have_text("2 results")


async def test_overload_answers_are_waited_out_for_retry_after_and_the_run_completes(
        page, screenshots, ui_url):
    await signed_in_user(page, ui_url)
    lines = review_lines(100)
    refusals = [
        (429, {"detail": "Too many texts classified; slow down."}),
        (503, {"detail": "Overloaded: the model's queue is full."}),
    ]
    calls = 0

    async def overloaded_at_first(route):
        nonlocal calls
        calls += 1
        if refusals:  # statuses a healthy service cannot be made to send on demand
            status, body = refusals.pop(0)
            await route.fulfill(status=status, body=json.dumps(body), headers={
                "Content-Type": "application/json", "Retry-After": "1"})
        else:
            await route.continue_()

    await page.route("**/predict/batch", overloaded_at_first)
    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Texts, one per line").fill("\n".join(lines))
    await page.get_by_role("button", name="Classify all").click()
    await expect(page.locator("#batch-progress-stats")).to_contain_text(
        re.compile(r"The service is (rate limiting|busy): retrying in 1 s"))
    await screenshots.take("waiting")
    await expect(page.locator("#batch-progress")).to_have_attribute("data-state", "done")
    await expect(page.locator("#batch-error")).to_be_hidden()
    _, table = await downloaded_csv(page, page.get_by_role("button", name="Download CSV").click)
    assert [row["text"] for row in table] == lines, "every text answered once, in input order"
    assert calls == 2 + math.ceil(100 / (await service_limits(page, ui_url))["max_batch_texts"])


async def test_a_csv_file_is_parsed_with_quotes_and_line_breaks_and_its_column_picked(
        page, screenshots, ui_url, tmp_path):
    await signed_in_user(page, ui_url)
    path = tmp_path / "export.csv"
    path.write_bytes(
        '\ufeffid,review,stars\r\n'
        '1,"Great phone, I love it",5\r\n'
        '2,"The screen said ""error""\nand then it died. Awful.",1\r\n'
        '\r\n'
        '3,Arrived on time,4\r\n'
        '4,,3\r\n'.encode())
    expected = ["Great phone, I love it", 'The screen said "error"\nand then it died. Awful.',
                "Arrived on time"]

    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Or a file").set_input_files(path)
    # The header is recognised and the column named like a review is chosen.
    await expect(page.get_by_label("First row is a header")).to_be_checked()
    column = page.get_by_label("Column with the text")
    await expect(column.locator("option")).to_have_text(
        ["id (column 1)", "review (column 2)", "stars (column 3)"])
    await expect(column).to_have_value("1")
    info = page.locator("#batch-file-info")
    await expect(info).to_contain_text("export.csv: 3 texts (1 empty skipped)")
    await page.get_by_label("First row is a header").uncheck()
    await expect(info).to_contain_text("export.csv: 4 texts")  # "review" is now a text
    await expect(column.locator("option").first).to_have_text("Column 1")
    await page.get_by_label("First row is a header").check()
    await screenshots.take("csv-options")

    await page.get_by_role("button", name="Classify all").click()
    await expect(page.locator("#batch-summary")).to_have_text("3 results")
    await expect(page.locator("#batch-table .cell-text")).to_have_text(expected)
    await expect(page.locator("#batch-table tbody tr").nth(1).locator(".pill")).to_have_text("negative")
    _, table = await downloaded_csv(page, page.get_by_role("button", name="Download CSV").click)
    assert [row["text"] for row in table] == expected
    assert [row["line"] for row in table] == ["2", "3", "6"], "the file line each record starts on"


async def test_a_file_over_10000_texts_can_only_run_as_a_job(page, ui_url, tmp_path):
    """Too many texts to send in parts to /predict/batch: the page forces the job option
    (the job itself is driven in test_ui_jobs.py) and sends nothing to /predict/batch."""
    await signed_in_user(page, ui_url)
    path = tmp_path / "big.txt"
    path.write_text("\n".join(f"text {i}" for i in range(10_001)), encoding="utf-8")
    sent = batch_requests(page)
    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Or a file").set_input_files(path)
    await expect(page.locator("#batch-file-info")).to_contain_text(
        "10,001 texts · over 10,000: it runs as a job")
    as_job = page.locator("#batch-as-job")
    await expect(as_job).to_be_checked()
    await expect(as_job).to_be_disabled()
    await expect(page.locator("#batch-progress")).to_be_hidden()
    assert sent == []


async def test_ctrl_enter_classifies_the_batch(page, screenshots, ui_url):
    await signed_in_user(page, ui_url)
    await page.get_by_role("tab", name="Batch").click()
    box = page.get_by_label("Texts, one per line")
    await box.fill("What a wonderful day, I am so happy.\nThis is dreadful, I am furious.")
    await box.focus()
    await page.keyboard.press("Control+Enter")
    rows = page.locator("#batch-table tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.locator(".pill")).to_have_text(["positive", "negative"])
    assert await box.input_value() != "", "the key classified; it typed no line break away"
    await screenshots.take("ctrl-enter")


async def test_the_csv_reader_handles_the_shapes_spreadsheets_write(page, ui_url):
    """The page's own CSV module, run in Chromium: delimiters, line ends, quotes, headers."""
    await page.goto(ui_url)
    read = await page.evaluate("""async () => {
        const { readCsv, csvTexts } = await import('./js/textfile.js');
        const texts = (content) => { const t = readCsv(content); return { ...csvTexts(t, t), header: t.hasHeader }; };
        return {
            semicolons: texts('id;comment\\r1;"Good; very good"\\r2;Bad\\r'),
            tabs: texts('text\\tscore\\nFine, thanks\\t3\\n'),
            noHeader: texts('Loved it and would buy again.\\nHated it.\\n'),
            numbered: texts('1,Loved it\\n2,Hated it\\n'),
            unterminated: texts('review\\n"It never ends, does it\\nno'),
            trailingDelimiter: texts('review,\\nGreat value,\\n'),
        };
    }""")
    assert read["semicolons"] == {"texts": ["Good; very good", "Bad"], "lines": [2, 3],
                                  "skipped": 0, "header": True}
    assert read["tabs"]["texts"] == ["Fine, thanks"] and read["tabs"]["header"]
    assert read["noHeader"]["header"] is False, "a sentence is no column name"
    assert read["noHeader"]["texts"] == ["Loved it and would buy again.", "Hated it."]
    assert read["numbered"] == {"texts": ["Loved it", "Hated it"], "lines": [1, 2],
                                "skipped": 0, "header": False}
    assert read["unterminated"]["texts"] == ["It never ends, does it\nno"]
    assert read["trailingDelimiter"]["texts"] == ["Great value"]
