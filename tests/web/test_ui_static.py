"""The web UI's files as the app serves them: public, complete, offline, outside the API docs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from serve_app.app import STATIC_DIR, create_app
from serve_app.settings import Settings

# Every reference a page or module makes to another file of the UI.
HTML_REFS = re.compile(r'(?:src|href)="([^"#:]+)"')
JS_IMPORTS = re.compile(r'^\s*import\s[^;]*?from\s+"(\./[^"]+)"', re.MULTILINE)
EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
HTML_SINKS = re.compile(r"\.(?:inner|outer)HTML\s*\+?=|insertAdjacentHTML|document\.write")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
async def ui_client(classify, tmp_path_factory):
    # Static files and the OpenAPI schema need no database or model call: no lifespan here.
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('ui')}/x.db",
                        secret_key="s" * 40)
    transport = httpx.ASGITransport(app=create_app(classify, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_ui_page_is_served_without_a_token(ui_client):
    response = await ui_client.get("/ui/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/main.js">' in response.text
    assert "Content-Security-Policy" in response.text


async def test_ui_without_trailing_slash_redirects_to_the_page(ui_client):
    response = await ui_client.get("/ui", follow_redirects=False)
    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/ui/")


async def test_every_file_the_page_references_is_served(ui_client):
    index = (STATIC_DIR / "index.html").read_text()
    refs = {ref for ref in HTML_REFS.findall(index) if not ref.startswith("..")}
    for module in (STATIC_DIR / "js").glob("*.js"):
        refs |= {f"js/{Path(name).name}" for name in JS_IMPORTS.findall(module.read_text())}
    assert {"css/app.css", "js/main.js", "js/api.js", "favicon.svg"} <= refs
    for ref in sorted(refs):
        response = await ui_client.get(f"/ui/{ref}")
        assert response.status_code == 200, ref
        if ref.endswith(".js"):  # module scripts are refused under any other type
            assert "javascript" in response.headers["content-type"], ref


async def test_a_missing_ui_file_is_a_json_404(ui_client):
    response = await ui_client.get("/ui/js/nope.js")
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_ui_is_not_an_api_route_in_openapi(ui_client):
    paths = (await ui_client.get("/openapi.json")).json()["paths"]
    assert {"/predict", "/data", "/health"} <= set(paths)
    assert not [path for path in paths if path.startswith("/ui")]


def test_ui_loads_nothing_from_another_origin():
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".html", ".css", ".js", ".svg"}:
            text = path.read_text().replace(SVG_NAMESPACE, "")
            assert not EXTERNAL.findall(text), f"{path.name} refers to another origin"


def test_no_user_text_is_written_as_html():
    # Predictions echo user text back; it must only ever reach the page as text.
    for path in (STATIC_DIR / "js").glob("*.js"):
        sink = HTML_SINKS.search(path.read_text())
        assert sink is None, f"{path.name} writes HTML: {sink and sink.group(0)}"
