"""The rejection middleware and the tokenizer timer, in-process (no Ray cluster: the metric
objects are replaced by a recorder, the FastAPI app and its exception handling are real)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from deployments.metrics import (
    MODEL_OVERLOADED,
    RejectionMetricsMiddleware,
    TimedTokenizer,
    note_rejection,
)


class Recorder:
    def __init__(self) -> None:
        self.rejections: list[tuple[int, str, str | None]] = []

    def observe_rejection(self, status_code: int, route: str, reason: str | None = None) -> None:
        self.rejections.append((status_code, route, reason))


class Body(BaseModel):
    text: str


def make_app(recorder: Recorder) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: Body) -> dict:
        if body.text == "overload":
            note_rejection(MODEL_OVERLOADED)  # as the ingress does on BackPressureError
            raise HTTPException(503, "overloaded", headers={"Retry-After": "1"})
        return {"ok": True}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        raise HTTPException(401, "no")

    app.add_middleware(RejectionMetricsMiddleware, ingress_metrics=recorder)
    return app


async def call(app: FastAPI, method: str, url: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kwargs)


async def test_a_note_from_the_handler_names_the_reason_of_a_503():
    recorder = Recorder()
    response = await call(make_app(recorder), "POST", "/predict", json={"text": "overload"})
    assert response.status_code == 503
    assert recorder.rejections == [(503, "/predict", MODEL_OVERLOADED)]


async def test_rejections_are_counted_by_route_template_and_successes_are_not():
    recorder = Recorder()
    app = make_app(recorder)
    assert (await call(app, "POST", "/predict", json={"text": "fine"})).status_code == 200
    assert (await call(app, "POST", "/predict", json={})).status_code == 422
    assert (await call(app, "GET", "/items/12345")).status_code == 401
    assert (await call(app, "GET", "/nowhere")).status_code == 404
    # The template, never the raw path (bounded label values); no reason noted -> by status.
    assert recorder.rejections == [(422, "/predict", None), (401, "/items/{item_id}", None),
                                   (404, "unmatched", None)]  # fmt: skip


def test_the_tokenizer_timer_adds_up_calls_and_delegates_the_rest():
    class Tokenizer:
        model_max_length = 128

        def __call__(self, texts, **kwargs):
            return {"input_ids": [[1, 2]] * len(texts)}

        def pad(self, features, **kwargs):
            return features

    timed = TimedTokenizer(Tokenizer())
    assert timed(["a", "b"])["input_ids"] == [[1, 2], [1, 2]]
    assert timed.pad([1]) == [1]
    assert timed.model_max_length == 128
    assert timed.take_seconds() > 0
    assert timed.take_seconds() == 0.0
