"""The application's spans, in process, recorded by an in-memory exporter (no Ray)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from deployments.tracing import record_model_batch, traceparent_per_text
from serve_app import tracing
from serve_app.app import create_app
from serve_app.settings import Settings
from serve_app.tracing import current_traceparent, span

TRACE_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_tracer_provider(None)


def caller() -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if format_trace_id(s.context.trace_id) == trace_id]


def parent_id(s: ReadableSpan) -> str | None:
    return format_span_id(s.parent.span_id) if s.parent else None


async def test_predict_spans_form_one_tree_under_the_callers_span(client, user, exporter):
    trace_id, caller_span, headers = caller()
    response = await client.post("/predict", json={"text": "Lovely food."},
                                 headers={**user.headers, **headers})
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == trace_id
    spans = of_trace(exporter, trace_id)
    names = {s.name for s in spans}
    assert names >= {"POST /predict", "authenticate", "rate_limit", "model_call",
                     "prediction_log.commit"}
    ids = {format_span_id(s.context.span_id) for s in spans}
    [root] = [s for s in spans if parent_id(s) not in ids]
    assert root.name == "POST /predict" and parent_id(root) == caller_span
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["http.route"] == "/predict"
    assert all(s.attributes["deployment"] == "APIIngress" for s in spans)


async def test_sign_up_and_log_in_trace_password_hashing(client, register, exporter):
    user = await register(client)
    names = [s.name for s in exporter.get_finished_spans()]
    assert "hash_password" in names and "verify_password" in names
    [login] = [s for s in exporter.get_finished_spans() if s.name == "POST /auth/token"]
    [verify] = [s for s in exporter.get_finished_spans() if s.name == "verify_password"]
    assert verify.context.trace_id == login.context.trace_id
    assert user.headers  # the log-in worked through the traced dependencies


@pytest.mark.parametrize("case", ["401", "422", "413"])
async def test_error_responses_carry_their_trace_id(client, user, exporter, case):
    trace_id, _, headers = caller()
    if case == "401":
        response = await client.post("/predict", json={"text": "x"}, headers=headers)
    elif case == "422":
        response = await client.post("/predict", json={"text": ""},
                                     headers={**user.headers, **headers})
    else:
        response = await client.post("/predict", content=b"x" * 10_000_000,
                                     headers={**user.headers, **headers,
                                              "content-type": "application/json"})
    assert response.status_code == int(case)
    assert response.headers["x-trace-id"] == trace_id
    [request] = [s for s in of_trace(exporter, trace_id) if s.name.startswith("POST")]
    assert request.attributes["http.response.status_code"] == int(case)


async def test_an_unhandled_error_still_carries_its_trace_id(database_url, register):
    async def wrong_count(texts):
        return []  # a classifier bug: the route raises, the last-resort handler answers 500

    app = create_app(wrong_count, Settings(database_url=database_url, secret_key="k" * 40, redis_url=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            user = await register(client)
            trace_id, _, headers = caller()
            response = await client.post("/predict", json={"text": "x"},
                                         headers={**user.headers, **headers})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    assert response.headers["x-trace-id"] == trace_id


async def test_without_tracing_no_span_is_made_yet_responses_carry_a_trace_id(client, user):
    assert not tracing.tracing_enabled()
    assert span("anything") is span("other")  # one shared no-op: nothing is built
    assert current_traceparent() is None
    trace_id, _, headers = caller()
    joined = await client.post("/predict", json={"text": "fine"},
                               headers={**user.headers, **headers})
    alone = await client.post("/predict", json={"text": "fine"}, headers=user.headers)
    assert joined.headers["x-trace-id"] == trace_id
    assert TRACE_ID.fullmatch(alone.headers["x-trace-id"])
    assert alone.headers["x-trace-id"] != trace_id


async def test_log_lines_of_a_request_carry_its_trace_id(client_with, register, caplog):
    async def failing(texts):
        raise RuntimeError("model down")

    async with client_with(classify_fn=failing) as failing_client:
        user = await register(failing_client)
        with caplog.at_level(logging.ERROR, logger="serve_app"):
            response = await failing_client.post("/predict", json={"text": "x"},
                                                  headers=user.headers)
    assert response.status_code == 503
    [record] = [r for r in caplog.records if r.getMessage().startswith("classifier failed")]
    assert record.trace_id == response.headers["x-trace-id"]
    assert f"trace_id={response.headers['x-trace-id']}" in record.getMessage()
    outside = logging.getLogger("serve_app").makeRecord("serve_app", logging.INFO, "f", 1,
                                                        "no request", None, None)
    assert not hasattr(outside, "trace_id")


def test_a_model_batch_links_every_request_and_each_request_sees_its_wait(exporter):
    requests = []
    for _ in range(2):
        with span("model_call") as request:
            requests.append((request, current_traceparent()))
    arrived = time.perf_counter()
    started, ended = arrived + 0.004, arrived + 0.010
    groups = [["a", "b"], ["c"]]
    traceparents = [traceparent_per_text([g], [tp]) for g, (_, tp) in zip(groups, requests)]
    record_model_batch(traceparents, [arrived, arrived + 0.001], started=started,
                       tokenize_s=0.002, ended=ended, texts=3)
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("model.")}
    batch = spans["model.batch"]
    assert batch.attributes["batch.texts"] == 3 and batch.attributes["batch.requests"] == 2
    assert [link.context.span_id for link in batch.links] == [
        r.get_span_context().span_id for r, _ in requests]
    assert all(s.attributes["deployment"] == "SentimentModel" for s in spans.values())
    for stage in ("model.queue_wait", "model.tokenize", "model.forward"):
        assert spans[stage].parent.span_id == batch.context.span_id
    assert spans["model.queue_wait"].end_time <= spans["model.tokenize"].start_time + 1000
    assert spans["model.tokenize"].end_time <= spans["model.forward"].start_time + 1000
    waits = [s for s in exporter.get_finished_spans() if s.name == "model.batch_wait"]
    assert sorted(w.parent.span_id for w in waits) == sorted(
        r.get_span_context().span_id for r, _ in requests)
    assert all([link.context.span_id for link in w.links] == [batch.context.span_id]
               for w in waits)


def test_no_traceparents_are_sent_without_tracing():
    assert traceparent_per_text([["a", "b"], ["c"]], [None, None]) is None
    assert traceparent_per_text([["a", "b"], ["c"]], ["x", "y"]) == ["x", "x", "y"]
