"""The web UI at /ui/, end to end in headless Chromium against the real running service."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from playwright.async_api import expect
from ui_steps import (
    PASSWORD,
    TOKEN_KEY,
    downloaded_csv,
    new_username,
    sign_in,
    sign_up,
    signed_in_user,
    stored_token,
)

pytestmark = [pytest.mark.browser, pytest.mark.ray]

POSITIVE = "I absolutely love this product. It works perfectly and the support team was wonderful!"
BATCH = [
    "This is the best purchase I have made all year, fantastic quality.",
    "Terrible experience. The package arrived broken and nobody answered my emails.",
    "The meeting is scheduled for Tuesday at ten.",
]


async def test_a_user_signs_up_classifies_runs_a_batch_reads_history_and_signs_out(
        page, screenshots, ui_url):
    await page.goto(ui_url)
    await expect(page.get_by_role("heading", name="Sentiment analysis, served.")).to_be_visible()
    await expect(page.locator("#health")).to_have_attribute("data-state", "healthy")
    await expect(page.locator("#health")).to_contain_text("model ")
    await screenshots.take("signed-out")

    username = new_username()
    await sign_up(page, username)
    # Creating an account signs in with it: no second trip through the sign-in form.
    await expect(page.locator("#notice")).to_have_text(
        f"Account “{username}” created. You are signed in.")
    await expect(page.locator("#user-name")).to_have_text(username)
    await expect(page.locator("#auth-view")).to_be_hidden()
    await expect(page.get_by_label("Text to classify")).to_be_focused()
    token = await stored_token(page)
    assert token and token.count(".") == 2, "the JWT is kept in sessionStorage"
    assert await page.context.cookies() == [], "the token never goes into a cookie"
    await screenshots.take("signed-up-and-in")

    # The account really exists: after signing out, its password signs in again.
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, username)
    await expect(page.locator("#user-name")).to_have_text(username)
    await expect(page.locator("#notice")).to_be_hidden()

    await page.get_by_label("Text to classify").fill(POSITIVE)
    await page.get_by_role("button", name="Classify", exact=True).click()
    result = page.locator("#classify-result")
    await expect(result.locator(".result__head .pill")).to_have_text("positive")
    await expect(result.locator(".result__number")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    bars = result.locator(".chart__row")
    await expect(bars).to_have_count(3)
    # Screen readers hear one sentence, not the whole card.
    await expect(page.locator("#announce")).to_have_text(re.compile(r"^Result: positive, \d+\.\d% confidence\.$"))
    await expect(bars.first).to_have_attribute("data-label", "positive")  # highest first
    widths = await bars.locator(".chart__fill").evaluate_all(
        "els => els.map(e => parseFloat(e.style.width))")
    assert widths == sorted(widths, reverse=True) and 99 <= sum(widths) <= 101, widths
    await screenshots.take("classified")

    await page.get_by_role("tab", name="Batch").click()
    # A blank line in the paste is skipped, not sent as an (invalid) empty text.
    await page.get_by_label("Texts, one per line").fill("\n".join(BATCH[:2]) + "\n\n" + BATCH[2] + "\n")
    await expect(page.locator("#batch-count")).to_have_text(
        "3 lines · blank lines are skipped · Ctrl+Enter to classify")
    await page.get_by_role("button", name="Classify all").click()
    rows = page.locator("#batch-table tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.locator(".cell-text")).to_have_text(BATCH)
    await expect(rows.nth(0).locator(".pill")).to_have_text("positive")
    await expect(rows.nth(1).locator(".pill")).to_have_text("negative")
    await expect(page.locator("#announce")).to_have_text(re.compile(r"^3 results\. .*1 positive.*\.$"))
    await screenshots.take("batch")

    filename, table = await downloaded_csv(
        page, page.get_by_role("button", name="Download CSV").click)
    assert filename.endswith(".csv")
    assert [row["text"] for row in table] == BATCH
    assert [row["line"] for row in table] == ["1", "2", "4"], "each text names its pasted line"
    assert [row["label"] for row in table[:2]] == ["positive", "negative"]
    assert {"score", "p_negative", "p_neutral", "p_positive", "model_version"} <= set(table[0])

    await page.get_by_role("tab", name="History").click()
    history = page.locator("#history-rows tbody tr")
    await expect(history).to_have_count(4)
    assert sorted(await history.locator(".cell-text").all_inner_texts()) == sorted([POSITIVE, *BATCH])
    await expect(page.locator("#history-range")).to_have_text("Showing 1–4")
    await expect(page.locator("#history-next")).to_be_disabled()
    await screenshots.take("history")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#notice")).to_have_text("You have signed out.")
    await expect(page.locator("#auth-view")).to_be_visible()
    await expect(page.locator("#app-view")).to_be_hidden()
    assert await stored_token(page) is None
    await page.reload()
    await expect(page.locator("#signin-form")).to_be_visible()
    await expect(page.locator("#user-menu")).to_be_hidden()
    await screenshots.take("signed-out-again")


async def test_history_pages_through_older_predictions(page, screenshots, ui_url):
    await signed_in_user(page, ui_url)
    texts = [f"Review number {i}: the product was fine." for i in range(12)]
    await page.get_by_role("tab", name="Batch").click()
    await page.get_by_label("Texts, one per line").fill("\n".join(texts))
    await page.get_by_role("button", name="Classify all").click()
    await expect(page.locator("#batch-table tbody tr")).to_have_count(12)

    data_urls: list[str] = []
    page.on("request", lambda r: data_urls.append(r.url) if re.search(r"/data\?", r.url) else None)
    await page.get_by_role("tab", name="History").click()
    await page.get_by_label("Rows per page").select_option("10")
    rows = page.locator("#history-rows tbody tr")
    await expect(rows).to_have_count(10)
    await expect(page.locator("#history-range")).to_have_text("Showing 1–10")
    await expect(page.locator("#history-prev")).to_be_disabled()
    first_page = await rows.locator(".cell-text").all_inner_texts()
    last_id = await rows.last.get_attribute("data-id")

    await page.get_by_role("button", name="Older →").click()
    await expect(rows).to_have_count(2)
    await expect(page.locator("#history-range")).to_have_text("Showing 11–12")
    await expect(page.locator("#history-next")).to_be_disabled()
    # Pages go by id (keyset), not by skipping rows.
    assert f"before_id={last_id}" in data_urls[-1] and "offset" not in data_urls[-1], data_urls[-1]
    second_page = await rows.locator(".cell-text").all_inner_texts()
    assert sorted(first_page + second_page) == sorted(texts), "each row on exactly one page"
    await screenshots.take("history-page-2")

    await page.get_by_role("button", name="← Newer").click()
    await expect(page.locator("#history-range")).to_have_text("Showing 1–10")


async def test_api_errors_are_shown_as_readable_messages(page, screenshots, ui_url):
    username = await signed_in_user(page, ui_url)

    # 422: a text longer than the service accepts (MAX_TEXT_CHARS).
    info = await (await page.request.get(f"{ui_url}../info")).json()
    max_chars = info["limits"]["max_text_chars"]
    await page.get_by_label("Text to classify").fill("great " * (max_chars // 6 + 1))
    await expect(page.locator("#classify-count")).to_have_text(
        re.compile(r"^[\d,]+ of [\d,]+ characters · too long$"))
    await page.get_by_role("button", name="Classify", exact=True).click()
    error = page.locator("#classify-error")
    await expect(error).to_contain_text(
        re.compile(rf"Please check your input: Text: .*{max_chars} characters"))
    assert "{" not in await error.inner_text()
    await expect(page.locator("#classify-result")).to_be_hidden()
    await screenshots.take("text-too-long")

    # 401 mid-session: a token whose signature no longer verifies sends the user to sign in.
    await page.evaluate(
        """(key) => {
            const [head, body, sig] = sessionStorage.getItem(key).split('.');
            sessionStorage.setItem(key, `${head}.${body}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`);
        }""",
        TOKEN_KEY,
    )
    await page.get_by_label("Text to classify").fill(POSITIVE)
    await page.get_by_role("button", name="Classify", exact=True).click()
    await expect(page.locator("#signin-form")).to_be_visible()
    await expect(page.locator("#notice")).to_have_text(
        "Your session has expired or is no longer valid. Please sign in again.")
    assert await stored_token(page) is None
    await screenshots.take("session-expired")

    # 401 on sign-in: a wrong password.
    await sign_in(page, username, password="not-the-password")
    await expect(page.locator("#signin-error")).to_have_text("Wrong username or password.")
    await expect(page.locator("#notice")).to_be_hidden()  # the expiry notice made way

    # 409: the same username again.
    await sign_up(page, username)
    await expect(page.locator("#signup-error")).to_have_text(
        "That username is already taken. Choose another one.")
    await screenshots.take("username-taken")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (413, {}, {"detail": "Request body too large"}, "That is too much to send at once"),
        (429, {"Retry-After": "7"}, {"detail": "Too many texts classified; slow down."},
         "Too many requests. Please try again in 7 seconds."),
        (503, {"Retry-After": "5"}, {"detail": "Model unavailable"},
         "temporarily unavailable. Please try again in 5 seconds."),
        (502, {"Content-Type": "text/html"}, "<html>Bad gateway</html>",
         "The server ran into a problem (HTTP 502)"),
    ],
)
async def test_overload_and_gateway_errors_read_as_sentences(
        page, screenshots, ui_url, status, headers, body, expected):
    """Statuses a healthy service cannot be made to send on demand, injected at the network layer."""
    username = await signed_in_user(page, ui_url)
    payload = body if isinstance(body, str) else json.dumps(body)
    await page.route("**/predict", lambda route: route.fulfill(
        status=status, body=payload, headers={"Content-Type": "application/json", **headers}))
    await page.get_by_label("Text to classify").fill(POSITIVE)
    await page.get_by_role("button", name="Classify", exact=True).click()
    error = page.locator("#classify-error")
    await expect(error).to_contain_text(expected)
    text = await error.inner_text()
    assert "{" not in text and "<" not in text
    await expect(page.locator("#user-name")).to_have_text(username)  # still signed in
    await screenshots.take(f"status-{status}")


async def test_the_whole_flow_works_from_the_keyboard_with_visible_focus(page, screenshots, ui_url):
    await page.goto(ui_url)
    await expect(page.locator("#signin-username")).to_be_focused()  # the page starts at sign-in

    async def focus_ring() -> str:
        return await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")

    # Tabs of the account switcher follow the ARIA pattern: arrow keys move between them.
    await page.keyboard.press("Shift+Tab")
    await expect(page.get_by_role("tab", name="Sign in")).to_be_focused()
    assert await focus_ring() != "none", "keyboard focus is visible"
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="Create account")).to_be_focused()
    await expect(page.locator("#signup-form")).to_be_visible()

    username = new_username()
    await page.keyboard.press("Tab")
    await expect(page.locator("#signup-username")).to_be_focused()
    await page.keyboard.type(username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#user-name")).to_have_text(username)  # signed up and in

    await expect(page.get_by_label("Text to classify")).to_be_focused()
    await page.keyboard.type("What a fantastic, delightful day. I am so happy!")
    await page.keyboard.press("Control+Enter")
    await expect(page.locator("#classify-result .result__head .pill")).to_have_text("positive")

    await page.get_by_role("tab", name="Classify").focus()
    await page.keyboard.press("End")
    await expect(page.get_by_role("tab", name="API keys")).to_be_focused()
    await page.keyboard.press("ArrowLeft")
    await expect(page.get_by_role("tab", name="History")).to_be_focused()
    await expect(page.locator("#history-rows tbody tr")).to_have_count(1)
    assert await focus_ring() != "none"
    await screenshots.take("keyboard-history")


async def test_the_page_signs_out_by_itself_when_the_token_expires(page, screenshots, ui_url):
    # The browser clock runs ahead; the service's token really carries this expiry (`exp`).
    await page.clock.install()
    await signed_in_user(page, ui_url)
    seconds_left = await page.evaluate(
        """(key) => JSON.parse(atob(sessionStorage.getItem(key).split('.')[1]
                .replace(/-/g, '+').replace(/_/g, '/'))).exp - Date.now() / 1000""",
        TOKEN_KEY,
    )
    assert 0 < seconds_left <= 24 * 3600, seconds_left
    await page.clock.fast_forward(int(seconds_left * 1000) - 5_000)
    await expect(page.locator("#user-name")).to_be_visible()  # not yet
    await page.clock.fast_forward(10_000)
    await expect(page.locator("#signin-form")).to_be_visible()
    await expect(page.locator("#notice")).to_have_text("Your session has expired. Please sign in again.")
    assert await stored_token(page) is None
    await screenshots.take("expired")


async def test_status_strip_shows_an_unhealthy_service(page, screenshots, ui_url):
    await page.route("**/health", lambda route: route.fulfill(
        status=503, headers={"Content-Type": "application/json", "Retry-After": "5"},
        body=json.dumps({"status": "unhealthy", "database": "ok",
                         "model": "no answer within 5s", "model_version": None,
                         "detail": "model no answer within 5s"})))
    await page.goto(ui_url)
    health = page.locator("#health")
    await expect(health).to_have_attribute("data-state", "unhealthy")
    await expect(health).to_have_text("Service unavailable: model no answer within 5s")
    await screenshots.take("unhealthy")


async def test_a_user_creates_copies_lists_and_revokes_an_api_key(
        page, screenshots, ui_url, service_url):
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service_url)
    await signed_in_user(page, ui_url)
    await page.get_by_role("tab", name="API keys").click()
    table = page.locator("#keys-table")
    await expect(table).to_contain_text("No API keys yet")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-error")).to_have_text("Give the key a name.")

    await page.get_by_label("Key name").fill("nightly import")
    await page.get_by_role("button", name="Create key").click()
    created = page.locator("#key-created")
    await expect(created).to_be_visible()
    await expect(created).to_contain_text("it is shown only this once")
    key = await page.locator("#key-value").inner_text()
    assert re.fullmatch(r"ssk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), key
    await page.get_by_role("button", name="Copy", exact=True).click()
    await expect(page.locator("#key-copy-status")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    rows = page.locator("#keys-rows tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.locator(".key-name")).to_have_text("nightly import")
    await expect(rows.locator(".key-last-used")).to_have_text("Never")
    assert key[17:] not in await table.inner_text(), "the list never shows the secret"
    await screenshots.take("key-created")

    # The key shown is a working credential.
    async with httpx.AsyncClient(base_url=service_url, timeout=60) as client:
        used = await client.post("/predict", headers={"X-API-Key": key}, json={"text": "works"})
        assert used.status_code == 200, used.text
    await page.get_by_role("button", name="I have stored it").click()
    await expect(created).to_be_hidden()
    assert key[17:] not in await page.content(), "once dismissed, the key is gone from the page"
    await page.get_by_role("tab", name="History").click()
    await page.get_by_role("tab", name="API keys").click()
    await expect(rows.locator(".key-last-used")).not_to_have_text("Never")

    # Revoking asks once more; Cancel keeps the key.
    revoke = page.get_by_role("button", name="Revoke key “nightly import”")
    await revoke.click()
    await page.get_by_role("button", name="Cancel").click()
    await expect(revoke).to_be_focused()
    await revoke.click()
    await screenshots.take("key-revoke-confirm")
    await page.get_by_role("button", name="Confirm revoke").click()
    await expect(table).to_contain_text("No API keys yet")
    await expect(page.locator("#announce")).to_have_text("Key “nightly import” revoked.")
    async with httpx.AsyncClient(base_url=service_url, timeout=60) as client:
        for _ in range(50):
            refused = await client.get("/", headers={"X-API-Key": key})
            if refused.status_code == 401:
                break
            await asyncio.sleep(0.1)
        assert refused.status_code == 401

        # Past the limit of live keys the page says why.
        token = {"Authorization": f"Bearer {await stored_token(page)}"}
        for i in range(20):
            made = await client.post("/auth/keys", headers=token, json={"name": f"k{i}"})
            assert made.status_code == 201, made.text
    await page.get_by_label("Key name").fill("one too many")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-error")).to_have_text(
        "Too many API keys: revoke one before creating another.")
    await expect(created).to_be_hidden()
    await screenshots.take("key-limit")
