"""Steps the browser tests share: accounts, sign-in, and calling the API as the page's user."""

from __future__ import annotations

import csv
import io
import uuid

from playwright.async_api import expect

PASSWORD = "correct-horse-battery"
TOKEN_KEY = "sentiment-serve.token"


def new_username() -> str:
    return f"ui_{uuid.uuid4().hex[:12]}"


async def stored_token(page) -> str | None:
    return await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")


async def sign_up(page, username: str) -> None:
    await page.get_by_role("tab", name="Create account").click()
    await page.locator("#signup-username").fill(username)
    await page.locator("#signup-password").fill(PASSWORD)
    await page.locator("#signup-form").get_by_role("button", name="Create account").click()


async def sign_in(page, username: str, password: str = PASSWORD) -> None:
    await expect(page.locator("#signin-username")).to_be_visible()
    await page.locator("#signin-username").fill(username)
    await page.locator("#signin-password").fill(password)
    await page.locator("#signin-form").get_by_role("button", name="Sign in").click()


async def signed_in_user(page, ui_url: str) -> str:
    """A new account, created on the page, which signs it in."""
    await page.goto(ui_url)
    username = new_username()
    await sign_up(page, username)
    await expect(page.locator("#user-name")).to_have_text(username)
    return username


async def api_get(page, service_url: str, path: str, **params):
    """GET an API path with the page's own bearer token, as the signed-in user."""
    token = await stored_token(page)
    response = await page.request.get(f"{service_url}{path}", params=params or None,
                                      headers={"Authorization": f"Bearer {token}"})
    assert response.ok, f"{path}: HTTP {response.status} {await response.text()}"
    return response


async def downloaded_csv(page, click) -> tuple[str, list[dict[str, str]]]:
    """Run `click()`, wait for the download it starts; its file name and rows."""
    async with page.expect_download() as download_info:
        await click()
    download = await download_info.value
    with open(await download.path(), newline="", encoding="utf-8") as handle:
        return download.suggested_filename, list(csv.DictReader(io.StringIO(handle.read())))
