"""The History tab and the phone layout, end to end in headless Chromium against the real
running service: the label-mix chart drawn from /data/summary, label filter, search, keyset
CSV export, rows as cards on a narrow screen, and long texts' windows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.async_api import expect
from ui_steps import api_get, downloaded_csv, signed_in_user

pytestmark = [pytest.mark.browser, pytest.mark.ray]

MIXED = [
    "I love this product, it is wonderful and works perfectly.",
    "Absolutely fantastic support, thank you so much!",
    "Terrible quality, it broke after one day. Awful.",
    "The worst service I have ever had, I am furious.",
    "The zebra at the zoo was delightful, a lovely visit.",
    'The zebra said "hello, world", then I was bored and annoyed.',
    "Zebra crossings are painted white, and that is all.",
    "What a great, happy afternoon with friends.",
    "This was a waste of money and time.",
]
PHONE = {"width": 390, "height": 844}
PHONE_WIDTHS = (320, 390, 400)
BUCKET_SIZE = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


async def classify_batch(page, texts: list[str]) -> None:
    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Texts, one per line").fill("\n".join(texts))
    await page.get_by_role("button", name="Classify all").click()
    await expect(page.locator("#batch-summary")).to_have_text(f"{len(texts)} results")


def per_label(series: list[dict]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in series:
        for label, count in entry["counts"].items():
            totals[label] = totals.get(label, 0) + count
    return {label: n for label, n in totals.items() if n}


async def chart_bars(page) -> list[dict]:
    return await page.locator("#mix-chart .mix__bar").evaluate_all("""bars => bars.map(bar => ({
        start: bar.dataset.start, total: Number(bar.dataset.total),
        segments: [...bar.querySelectorAll('rect')].map(r => ({
            label: r.dataset.label, count: Number(r.dataset.count), height: Number(r.getAttribute('height'))}))
    }))""")


async def test_the_history_chart_is_drawn_from_the_summary(page, screenshots, ui_url, service_url):
    await signed_in_user(page, ui_url)
    await classify_batch(page, MIXED)
    await page.get_by_role("tab", name="History").click()
    figure = page.locator("#mix-chart figure")
    await expect(figure).to_have_attribute("data-total", str(len(MIXED)))
    await screenshots.take("chart-30-days")

    summary = (await (await api_get(page, service_url, "/data/summary", bucket="day")).json())
    assert summary["bucket"] == "day"
    expected = per_label(summary["series"])
    assert sum(expected.values()) == len(MIXED)

    bars = await chart_bars(page)
    assert len(bars) == 30, "one bar per day of the period, empty days included"
    drawn: dict[str, int] = {}
    for bar in bars:
        for segment in bar["segments"]:
            drawn[segment["label"]] = drawn.get(segment["label"], 0) + segment["count"]
    assert {label: n for label, n in drawn.items() if n} == expected
    [today] = [bar for bar in bars if bar["total"]]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(today["start"]) == midnight
    assert today is bars[-1], "the newest day is drawn last"
    # Segment heights are proportional to the counts they stand for.
    ratios = {s["height"] / s["count"] for s in today["segments"] if s["count"]}
    assert max(ratios) - min(ratios) < 0.05 * max(ratios), today
    chart_label = await page.locator("#mix-chart svg").get_attribute("aria-label")
    assert chart_label.startswith(f"Label mix, last 30 days by day: {len(MIXED)} predictions, ")
    for label, count in expected.items():
        await expect(page.locator(f'.mix__key[data-label="{label}"]')).to_contain_text(f"{label} {count}")

    # By hour, the bars follow the hourly summary.
    await page.get_by_label("Period").select_option("24h")
    await expect(page.locator("#mix-chart .mix__bar")).to_have_count(24)
    hourly = (await (await api_get(page, service_url, "/data/summary", bucket="hour")).json())
    by_start = {datetime.fromisoformat(e["start"]): sum(e["counts"].values()) for e in hourly["series"]}
    drawn_by_start = {datetime.fromisoformat(b["start"]): b["total"]
                      for b in await chart_bars(page) if b["total"]}
    assert drawn_by_start == by_start
    await screenshots.take("chart-24-hours")


async def test_history_filters_by_label_searches_text_and_exports_what_it_shows(
        page, screenshots, ui_url, service_url):
    await signed_in_user(page, ui_url)
    await classify_batch(page, MIXED)
    await page.get_by_role("tab", name="History").click()
    rows = page.locator("#history-rows tbody tr")
    await expect(rows).to_have_count(len(MIXED))

    await page.get_by_label("Label", exact=True).select_option("positive")
    positives = await (await api_get(page, service_url, "/data", label="positive")).json()
    assert positives, "the batch holds positive texts"
    await expect(rows).to_have_count(len(positives))
    await expect(rows.locator(".pill")).to_have_text(["positive"] * len(positives))
    await screenshots.take("label-positive")

    await page.get_by_label("Label", exact=True).select_option("")
    await page.get_by_label("Search text").fill("ZEBRA")  # any case
    zebras = [text for text in MIXED if "zebra" in text.lower()]
    await expect(rows).to_have_count(len(zebras))
    assert sorted(await rows.locator(".cell-text").all_inner_texts()) == sorted(zebras)
    await screenshots.take("search-zebra")

    filename, table = await downloaded_csv(page, page.get_by_role("button", name="Export CSV").click)
    assert filename.endswith(".csv")
    assert list(table[0]) == ["id", "created_at", "text", "label", "score", "model_version"]
    assert sorted(row["text"] for row in table) == sorted(zebras), "quotes and commas survive"

    await page.get_by_label("Search text").fill("no text says this")
    await expect(page.locator("#history-table")).to_have_text("No predictions match these filters.")


async def test_phone_layout_shows_rows_as_cards_with_label_and_confidence(
        page, screenshots, ui_url):
    await page.set_viewport_size(PHONE)
    await signed_in_user(page, ui_url)
    await classify_batch(page, MIXED[:4])

    async def assert_cards(table_selector: str) -> None:
        rows = page.locator(f"{table_selector} tbody tr")
        header = await page.locator(f"{table_selector} thead").bounding_box()
        assert header["height"] <= 1, "column headings are left to screen readers"
        for i in range(await rows.count()):
            row = rows.nth(i)
            assert await row.evaluate("r => getComputedStyle(r).display") == "grid"
            for part in (row.locator(".pill"), row.locator(".cell-score")):
                await expect(part).to_be_visible()
                box = await part.bounding_box()
                assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], box
            await expect(row.locator(".cell-score")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways ({width}px)"

    await assert_cards("#batch-table")
    await screenshots.take("phone-batch")
    await page.get_by_role("tab", name="History").click()
    await expect(page.locator("#history-rows tbody tr")).to_have_count(4)
    await assert_cards("#history-rows")
    chart = await page.locator("#mix-chart svg").bounding_box()
    assert chart["width"] <= PHONE["width"]
    await screenshots.take("phone-history")


async def serve_a_busy_summary(page) -> None:
    """Answer /data/summary in its own shape with the counts of a busy account: thousands a
    day, tens of thousands an hour, in every bucket of the period the page asks for."""
    async def summary(route) -> None:
        query = parse_qs(urlparse(route.request.url).query)
        bucket = query["bucket"][0]
        start = datetime.fromisoformat(query["since"][0].replace("Z", "+00:00"))
        until = datetime.fromisoformat(query["until"][0].replace("Z", "+00:00"))
        scale = 10 if bucket == "hour" else 1
        series = []
        for i in range(10_000):
            if start >= until:
                break
            series.append({"start": start.isoformat(), "counts": {
                "negative": (1234 + 20 * i) * scale, "neutral": 987 * scale,
                "positive": (2345 - 11 * i) * scale}})
            start += BUCKET_SIZE[bucket]
        await route.fulfill(status=200, content_type="application/json",
                            body=json.dumps({"bucket": bucket, "series": series}))

    await page.route("**/data/summary?*", summary)


async def chart_text_boxes(page) -> tuple[dict, list[dict]]:
    """The chart's box and every axis label's text and box, as the browser laid them out."""
    return await page.locator("#mix-chart svg").evaluate("""svg => {
        const box = (node) => { const r = node.getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
        return [box(svg), [...svg.querySelectorAll('text')].map(t => ({
            text: t.textContent, bucket_name: t.classList.contains('mix__x'), ...box(t)}))];
    }""")


async def test_chart_axis_labels_fit_inside_the_chart_on_phone_screens(page, screenshots, ui_url):
    await signed_in_user(page, ui_url)
    await serve_a_busy_summary(page)
    for period, bucket, top in (("30d", "day", "5,000"), ("24h", "hour", "50,000")):
        await page.set_viewport_size(PHONE)
        await page.get_by_role("tab", name="History").click()
        await page.get_by_label("Period").select_option(period)
        await expect(page.locator("#mix-chart .mix__tick text").last).to_have_text(top)
        for width in PHONE_WIDTHS:
            await page.set_viewport_size({"width": width, "height": 844})
            chart, labels = await chart_text_boxes(page)
            assert chart["right"] <= width, f"the chart is wider than a {width}px screen"
            assert any(label["text"] == top for label in labels)
            for label in labels:
                assert label["right"] > label["left"], label
                for side in ("left", "top"):
                    assert label[side] >= chart[side] - 0.5, f"{width}px, {bucket}: {label} leaves {chart}"
                for side in ("right", "bottom"):
                    assert label[side] <= chart[side] + 0.5, f"{width}px, {bucket}: {label} leaves {chart}"
            names = sorted((label for label in labels if label["bucket_name"]),
                           key=lambda label: label["left"])
            assert len(names) >= 2, labels
            for before, after in zip(names, names[1:], strict=False):
                assert before["right"] <= after["left"], f"{width}px: {before} overlaps {after}"
            await screenshots.take(f"phone-{width}-{period}")


async def test_long_texts_show_how_many_windows_they_were_read_in(page, screenshots, ui_url):
    await signed_in_user(page, ui_url)
    long_text = " ".join(["The hotel was lovely, the staff were kind and the food was superb."] * 40)
    async with page.expect_response("**/predict") as answer:
        await page.get_by_label("Text to classify").fill(long_text)
        await page.get_by_role("button", name="Classify", exact=True).click()
    windows = (await (await answer.value).json())["windows"]
    assert windows >= 2, "a text this long spans several model windows"
    await expect(page.locator("#classify-result .tag")).to_have_text(f"{windows} windows")
    await screenshots.take("windows")

    await page.get_by_label("Text to classify").fill("Short and sweet, I love it.")
    await page.get_by_role("button", name="Classify", exact=True).click()
    await expect(page.locator("#classify-result .result__text")).to_have_text("Short and sweet, I love it.")
    await expect(page.locator("#classify-result .tag")).to_have_count(0)

    await classify_batch(page, [long_text, "Short and sweet, I love it."])
    tags = page.locator("#batch-table tbody tr .tag")
    await expect(tags).to_have_count(1)
    long_row = page.locator("#batch-table tbody tr").first
    await expect(long_row.locator(".tag")).to_have_text(f"{windows} windows")
    # A long text shows its first lines; the rest is one click away.
    show = long_row.get_by_role("button", name=f"Show all {len(long_text):,} characters")
    await show.click()
    await expect(long_row.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true")
