"""The application's spans, W3C trace context, and the trace id of each request; free of Ray.

Spans are made only once `use_tracer_provider()` installed a provider (under Ray Serve the
replica does so when Serve's own tracing is on, see `deployments/tracing.py`). Until then
`traced` calls straight through and `span()` hands back one shared no-op context manager:
a service without tracing builds no span at all.

Every span carries the attribute `deployment`, as Ray Serve's own spans do. Each HTTP
response carries its trace id in `X-Trace-Id`, and so do the log lines written while the
request runs; without tracing that id is the caller's (`traceparent`) or a fresh one, so
logs and responses can still be matched.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Tracer, TracerProvider, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INGRESS = "APIIngress"
MODEL = "SentimentModel"
TRACE_ID_HEADER = "x-trace-id"

_NO_SPAN = nullcontext()
_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_request_trace_id: ContextVar[str | None] = ContextVar("request_trace_id", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Make spans with `provider` from now on; None stops making them."""
    global _tracer
    _tracer = provider.get_tracer("sentiment-serve") if provider is not None else None


def tracing_enabled() -> bool:
    return _tracer is not None


def span(name: str, *, deployment: str = INGRESS,
         attributes: dict[str, Any] | None = None) -> AbstractContextManager:
    """A child of the current span, made current while the block runs."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        name, attributes={"deployment": deployment, **(attributes or {})})


def traced(name: str, *, deployment: str = INGRESS
           ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run an async function inside a span named `name` (when tracing is on)."""

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        # functools.wraps keeps the signature visible (FastAPI reads it for dependencies).
        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None:
                return await func(*args, **kwargs)
            with span(name, deployment=deployment):
                return await func(*args, **kwargs)

        return wrapper

    return decorate


# ---- W3C trace context across processes ---------------------------------------------------


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent` value; None without tracing."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str) -> Context:
    return _propagator.extract({"traceparent": traceparent})


def links_to(traceparents: Iterable[str]) -> list[Link]:
    links = []
    for value in dict.fromkeys(traceparents):  # each request once, in order
        context = trace.get_current_span(context_of(value)).get_span_context()
        if context.is_valid:
            links.append(Link(context))
    return links


def epoch_ns(perf_counter_s: float) -> int:
    """A `time.perf_counter()` reading as the wall-clock nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.perf_counter() - perf_counter_s) * 1e9)


def record_span(name: str, start_s: float, end_s: float, *, deployment: str,
                context: Context | None = None, links: list[Link] | None = None,
                attributes: dict[str, Any] | None = None) -> trace.Span | None:
    """A finished span over [start_s, end_s] (perf_counter seconds), made after the fact."""
    if _tracer is None:
        return None
    recorded = _tracer.start_span(name, context=context, links=links, start_time=epoch_ns(start_s),
                                  attributes={"deployment": deployment, **(attributes or {})})
    recorded.end(end_time=epoch_ns(end_s))
    return recorded


# ---- the trace id of each request ----------------------------------------------------------


def request_trace_id() -> str | None:
    return _request_trace_id.get()


def _incoming_trace_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"traceparent":
            context = trace.get_current_span(context_of(value.decode("latin-1"))).get_span_context()
            return format_trace_id(context.trace_id) if context.is_valid else None
    return None


class TraceMiddleware:
    """Outermost ASGI middleware: one span per HTTP request, `X-Trace-Id` on every response.

    Under Ray Serve the request's span is a child of Serve's replica span (itself a child of the
    caller's `traceparent`); in process it is a child of the caller's `traceparent` directly.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _tracer is None:
            trace_id = _incoming_trace_id(scope["headers"]) or secrets.token_hex(16)
            await self._run(scope, receive, send, trace_id, None)
            return
        # Ray Serve's replica span is current when Serve traced this request; otherwise the
        # caller's traceparent (if any) is the parent.
        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            parent = _propagator.extract({k.decode("latin-1"): v.decode("latin-1")
                                          for k, v in scope["headers"]})
        method, path = scope.get("method", ""), scope.get("path", "")
        with _tracer.start_as_current_span(
                f"{method} {path}", context=parent, kind=trace.SpanKind.SERVER,
                attributes={"deployment": INGRESS, "http.request.method": method,
                            "url.path": path}) as request_span:
            trace_id = format_trace_id(request_span.get_span_context().trace_id)
            await self._run(scope, receive, send, trace_id, request_span)
            route = scope.get("route")
            if getattr(route, "path", None):
                request_span.update_name(f"{method} {route.path}")
                request_span.set_attribute("http.route", route.path)

    async def _run(self, scope: dict, receive: Any, send: Any, trace_id: str,
                   request_span: trace.Span | None) -> None:
        header = (TRACE_ID_HEADER.encode(), trace_id.encode())
        # The app's last-resort 500 handler runs outside this middleware: it reads it here.
        scope.setdefault("state", {})["trace_id"] = trace_id

        async def send_with_trace_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
                if request_span is not None:
                    request_span.set_attribute("http.response.status_code", message["status"])
            await send(message)

        token = _request_trace_id.set(trace_id)
        try:
            await self.app(scope, receive, send_with_trace_id)
        finally:
            _request_trace_id.reset(token)


def trace_id_headers(scope: dict) -> dict[str, str]:
    """`X-Trace-Id` for a response made outside `TraceMiddleware` (the 500 handler)."""
    trace_id = (scope.get("state") or {}).get("trace_id")
    return {TRACE_ID_HEADER: trace_id} if trace_id else {}


# ---- log lines -----------------------------------------------------------------------------


def install_log_trace_ids() -> None:
    """Log records made while a request runs carry its trace id: as the attribute `trace_id`
    (structured logs) and at the end of the message (text logs). Installed once per process."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_trace_id", False):
        return

    def record_with_trace_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        trace_id = _request_trace_id.get()
        if trace_id is not None:
            record.trace_id = trace_id
            record.msg = f"{record.msg} [trace_id={trace_id}]"
        return record

    record_with_trace_id.adds_trace_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_with_trace_id)
