"""Tracing through a real Serve instance into a real OTLP/HTTP receiver.

The cluster gets only OpenTelemetry's variables (and the Ray Serve switches derived from them,
as `make run` does), in the environment of every Ray process: proxy, controller and replicas.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402
from serve_stack import ServeInstance, signup_and_login, start_serve  # noqa: E402

from bench.ray_cluster import shipped_ray_env  # noqa: E402
from deployments.tracing_env import ray_tracing_env  # noqa: E402

pytestmark = pytest.mark.ray

TRACE_ID = re.compile(r"[0-9a-f]{32}")
SERVICE_NAME = "sentiment-serve-it"
# Behind HAProxy (as shipped) a request's first span is the ingress replica's own; behind
# Serve's Python proxy it is the proxy's.
HAPROXY = shipped_ray_env().get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
ROOT_SPAN = "replica_handle_request APIIngress" if HAPROXY else "proxy_http_request"
APP_SPANS = {"authenticate", "rate_limit", "model_call", "prediction_log.commit",
             "model.batch", "model.queue_wait", "model.tokenize", "model.forward",
             "model.batch_wait"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_serve(receiver: OtlpReceiver) -> Iterator[ServeInstance]:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second
    }
    with start_serve(cluster_env={**otel, **ray_tracing_env(otel)}) as instance:
        yield instance


def traceparent() -> tuple[str, str, str]:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, caller_span, f"00-{trace_id}-{caller_span}-01"


def describe(spans: list[ReceivedSpan]) -> str:
    return "\n".join(f"{s.name} [{s.attributes.get('deployment')}] {s.span_id}<-{s.parent_span_id}"
                     for s in sorted(spans, key=lambda s: s.start_ns))


async def test_predict_joins_the_callers_trace_through_proxy_ingress_and_model(
        traced_serve: ServeInstance, receiver: OtlpReceiver) -> None:
    trace_id, caller_span, header = traceparent()
    async with traced_serve.client() as client:
        user = await signup_and_login(client, "traced")
        response = await client.post("/predict", json={"text": "A wonderful, kind reply."},
                                     headers={**user.headers, "traceparent": header})
    assert response.status_code == 200, response.text
    assert response.headers["x-trace-id"] == trace_id

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans}
        return APP_SPANS <= names and any(n.startswith(ROOT_SPAN) for n in names)

    spans = receiver.wait_for_trace(trace_id, complete)
    assert complete(spans), describe(spans)
    by_id = {s.span_id: s for s in spans}
    # One tree: every span's parent is in the trace, except the root, whose parent is the caller.
    roots = [s for s in spans if s.parent_span_id not in by_id]
    assert [s.parent_span_id for s in roots] == [caller_span], describe(spans)
    assert roots[0].name.startswith(ROOT_SPAN), describe(spans)
    assert all(s.service == SERVICE_NAME for s in spans)
    assert all(s.attributes.get("deployment") in {"APIIngress", "SentimentModel"} for s in spans), \
        [(s.name, s.attributes.get("deployment")) for s in spans]
    # Ray's spans: routing to each deployment (HAProxy routes to the ingress without one), and
    # each replica.
    names = [s.name for s in spans]
    routed = () if HAPROXY else ("route_to_replica APIIngress",)
    for prefix in (*routed, "replica_handle_request APIIngress",
                   "route_to_replica SentimentModel", "replica_handle_request SentimentModel"):
        assert any(n.startswith(prefix) for n in names), (prefix, describe(spans))
    # The ingress's spans and the model's spans come from both kinds of replica.
    assert by_deployment(spans, "APIIngress") >= {"authenticate", "rate_limit", "model_call",
                                                  "prediction_log.commit"}
    assert by_deployment(spans, "SentimentModel") >= {"model.batch", "model.tokenize",
                                                      "model.forward", "model.batch_wait"}
    # The batch links to the request it served (its model call, carried across the handle).
    [model_call] = [s for s in spans if s.name == "model_call"]
    [batch] = [s for s in spans if s.name == "model.batch"]
    assert (trace_id, model_call.span_id) in batch.links
    [wait] = [s for s in spans if s.name == "model.batch_wait"]
    assert wait.parent_span_id == model_call.span_id
    assert wait.links == ((trace_id, batch.span_id),)
    for stage in ("model.queue_wait", "model.tokenize", "model.forward"):
        [child] = [s for s in spans if s.name == stage]
        assert child.parent_span_id == batch.span_id
    # The model call encloses the model's work, which ran after the authentication.
    [auth] = [s for s in spans if s.name == "authenticate"]
    assert auth.end_ns <= model_call.start_ns <= batch.start_ns <= batch.end_ns <= model_call.end_ns


def by_deployment(spans: list[ReceivedSpan], deployment: str) -> set[str]:
    return {s.name for s in spans if s.attributes.get("deployment") == deployment}


async def test_errors_carry_their_trace_id(traced_serve: ServeInstance,
                                           receiver: OtlpReceiver) -> None:
    trace_id, _, header = traceparent()
    async with traced_serve.client() as client:
        user = await signup_and_login(client, "traced422")
        invalid = await client.post("/predict", json={"text": ""},
                                    headers={**user.headers, "traceparent": header})
        unauthenticated = await client.post("/predict", json={"text": "hello"})
    assert invalid.status_code == 422, invalid.text
    assert invalid.headers["x-trace-id"] == trace_id
    assert unauthenticated.status_code == 401
    own_trace = unauthenticated.headers["x-trace-id"]
    assert TRACE_ID.fullmatch(own_trace) and own_trace != trace_id

    def has_request_span(spans: list[ReceivedSpan]) -> bool:
        return any(s.attributes.get("http.response.status_code") for s in spans)

    for expected_trace, status in ((trace_id, 422), (own_trace, 401)):
        spans = receiver.wait_for_trace(expected_trace, has_request_span)
        [request] = [s for s in spans if s.attributes.get("http.response.status_code")]
        assert request.attributes["http.response.status_code"] == status
        assert request.attributes["deployment"] == "APIIngress"
