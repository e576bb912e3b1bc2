"""Ray Serve's own tracing, exported over OTLP/HTTP, with the application's spans beside it.

Serve (2.60) makes the proxy, routing and replica spans itself once
`RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH` names `otlp_span_processors` below
(`deployments/tracing_env.py` derives that from OpenTelemetry's variables). Serve then installs
the process's tracer provider; `start_app_tracing()`, called in each replica's constructor,
points the application's spans (`serve_app.tracing`) at the same provider.

Serve carries the trace context of a handle call in its request metadata, but a coalesced call
or a model batch serves several requests while Serve keeps the context of the first only. So
the ingress passes each text's W3C `traceparent` along with the texts, and the model links
every batch to all the requests it served (`record_model_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import Link

from serve_app import tracing
from serve_app.tracing import MODEL, context_of, links_to, record_span

__all__ = ["otlp_span_processors", "record_model_batch", "start_app_tracing",
           "traceparent_per_text"]


def otlp_span_processors() -> list[SpanProcessor]:
    """Serve's exporter hook: spans leave in batches over OTLP/HTTP. The exporter reads
    OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT ... itself; OTEL_BSP_* tune the
    batching; OTEL_SERVICE_NAME names the resource (Serve's provider reads it)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return [BatchSpanProcessor(OTLPSpanExporter())]


def start_app_tracing() -> None:
    """Make the application's spans when, and only when, Serve traces this replica."""
    provider = trace.get_tracer_provider()
    tracing.use_tracer_provider(provider if isinstance(provider, SdkTracerProvider) else None)


def record_model_batch(traceparents: Sequence[Sequence[str | None] | None],
                       arrived_at: Sequence[float], *, started: float, tokenize_s: float,
                       ended: float, texts: int) -> None:
    """The spans of one model batch (perf_counter times), made after it ran.

    `traceparents` holds, per batched call, the traceparent of each of its texts (None without
    tracing). The batch span lives in the trace Serve runs the batch in (its first call's) and
    links to every request; each request gets a `model.batch_wait` span in its own trace,
    from its arrival to the start of the batch, linked back to the batch.
    """
    if not tracing.tracing_enabled():
        return
    waits = [(value, arrival) for values, arrival in zip(traceparents, arrived_at, strict=True)
             for value in dict.fromkeys(values or ()) if value]
    parent = None  # Serve's context for the batch: its first call's replica span
    if not trace.get_current_span().get_span_context().is_valid and waits:
        parent = context_of(waits[0][0])
    first_arrival = min(arrived_at, default=started)
    batch = record_span(
        "model.batch", first_arrival, ended, deployment=MODEL, context=parent,
        links=links_to(value for value, _ in waits),
        attributes={"batch.texts": texts, "batch.requests": len(waits),
                    "batch.queue_wait_ms": round((started - first_arrival) * 1000, 3),
                    "batch.tokenize_ms": round(tokenize_s * 1000, 3),
                    "batch.forward_ms": round((ended - started - tokenize_s) * 1000, 3)})
    if batch is None:
        return
    inside = trace.set_span_in_context(batch, parent)
    tokenized = started + tokenize_s
    for name, start, end in (("model.queue_wait", first_arrival, started),
                             ("model.tokenize", started, tokenized),
                             ("model.forward", tokenized, ended)):
        record_span(name, start, end, deployment=MODEL, context=inside)
    to_batch = [Link(batch.get_span_context())]
    for value, arrival in waits:
        record_span("model.batch_wait", arrival, started, deployment=MODEL,
                    context=context_of(value), links=to_batch)


def traceparent_per_text(groups: Sequence[Sequence[str]],
                         traceparents: Sequence[str | None]) -> list[str | None] | None:
    """Each text's request traceparent, for a handle call carrying `groups`; None (nothing to
    send) without tracing."""
    if not any(traceparents):
        return None
    return [value for group, value in zip(groups, traceparents, strict=True) for _ in group]
