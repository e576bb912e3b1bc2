"""The bench's closed-loop clients wait out 503/429 + Retry-After and resend, like real ones."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bench import loadgen


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/predict", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


async def _load(handler, **kwargs) -> loadgen.LoadResult:
    runner, url = await _serve(handler)
    try:
        return await loadgen.run_closed_loop(url, "token", route="/predict", concurrency=1,
                                             duration_s=0.2, warmup_s=0, **kwargs)
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch):
    monkeypatch.setattr(loadgen, "RETRY_JITTER_S", 0.0)


def test_a_shed_request_is_resent_with_the_same_body_and_counted_as_shed_not_error():
    bodies: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        if len(bodies) % 3:  # two refusals, then the answer
            return web.json_response({"detail": "busy"}, status=503, headers={"Retry-After": "0"})
        return web.json_response({"label": "positive"})

    result = asyncio.run(_load(handler))
    assert result.requests >= 1 and result.errors == 0
    assert result.shed == 2 * result.requests
    assert bodies[0] == bodies[1] == bodies[2] != bodies[3]
    assert result.status_counts == {"200": result.requests}


def test_a_request_refused_past_the_retries_is_an_error_and_other_failures_are_not_retried():
    calls = {"503": 0, "500": 0}

    async def always_busy(request: web.Request) -> web.Response:
        calls["503"] += 1
        return web.json_response({"detail": "busy"}, status=503, headers={"Retry-After": "0"})

    busy = asyncio.run(_load(always_busy))
    assert busy.requests == 0 and busy.errors >= 1
    assert calls["503"] == busy.errors * (loadgen.MAX_RETRIES + 1)
    assert busy.shed == busy.errors * loadgen.MAX_RETRIES

    async def broken(request: web.Request) -> web.Response:
        calls["500"] += 1
        return web.json_response({"detail": "boom"}, status=500)

    failed = asyncio.run(_load(broken))
    assert failed.shed == 0 and failed.errors == calls["500"]
    assert failed.status_counts == {"500": failed.errors}


def test_a_503_without_retry_after_is_not_retried():
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"detail": "down"}, status=503)

    result = asyncio.run(_load(handler))
    assert result.shed == 0 and result.errors >= 1
