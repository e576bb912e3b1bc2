"""The service's own metrics, defined in one place with stable names.

Ray exports each metric on the node's metrics port as ``ray_<name>`` (counters also get
``_total``), with Serve's ``deployment``, ``replica`` and ``application`` tags added when it is
recorded inside a replica. configs/prometheus.yml scrapes that port and
configs/grafana/sentiment.json charts these names, so rename nothing here without both.

Request time is split by stage, as a request sees it:
  model replica:   queue (waiting for a batch to start), tokenize, inference (forward + softmax)
  ingress replica: model_call (the handle round trip: transport + queue + batch), db_write
"""

from __future__ import annotations

import contextvars
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

from ray.serve import metrics

# Seconds; spans 1 ms (a cache hit) to 30 s (a saturated queue).
LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0]  # fmt: skip
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]

# Exported names (Prometheus side). Tests and the dashboard refer to these.
PREDICTIONS = "sentiment_predictions"
BATCH_SIZE = "sentiment_batch_size"
MODEL_LATENCY = "sentiment_model_latency_seconds"
STAGE_LATENCY = "sentiment_stage_seconds"
DB_WRITE_LATENCY = "sentiment_db_write_seconds"
DB_WRITE_ROWS = "sentiment_db_write_rows"
CACHE_HITS = "sentiment_cache_hits"
CACHE_MISSES = "sentiment_cache_misses"
CACHE_HIT_RATIO = "sentiment_cache_hit_ratio"
REJECTED = "sentiment_rejected_requests"
ADMISSION_WAIT = "sentiment_admission_wait_seconds"

# Status code -> why a request was turned away. 409 (name taken) and 404 are answers, not
# rejections, so they are not counted.
REJECTION_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
MODEL_OVERLOADED = "model_overloaded"  # the model deployment's max_queued_requests was reached
MODEL_UNAVAILABLE = "model_unavailable"


def _histogram(name: str, description: str, boundaries: list[float], tags=()) -> Any:
    return metrics.Histogram(name, description, boundaries=boundaries, tag_keys=tuple(tags) or None)


class ModelMetrics:
    """Recorded by SentimentModel replicas. Create inside the replica (in __init__)."""

    def __init__(self) -> None:
        self.predictions = metrics.Counter(
            PREDICTIONS, "Predictions served, by label (cache hits included).", ("label",)
        )
        self.batch_size = _histogram(
            BATCH_SIZE, "Texts per forward pass formed by @serve.batch.", BATCH_SIZE_BOUNDARIES
        )
        self.model_latency = _histogram(
            MODEL_LATENCY, "Seconds per batch in the classifier (tokenize + forward).",
            LATENCY_BOUNDARIES_S,
        )  # fmt: skip
        self.stage = _histogram(
            STAGE_LATENCY, "Seconds a request spends in each stage.", LATENCY_BOUNDARIES_S,
            ("stage",),
        )  # fmt: skip
        self.cache_hits = metrics.Counter(CACHE_HITS, "Texts answered from the result cache.")
        self.cache_misses = metrics.Counter(CACHE_MISSES, "Texts the result cache did not hold.")
        self.cache_hit_ratio = metrics.Gauge(
            CACHE_HIT_RATIO, "Hits / lookups of this replica's result cache since it started."
        )

    def record_labels(self, labels: Iterable[str]) -> None:
        for label, count in Tally(labels).items():
            self.predictions.inc(count, tags={"label": label})

    def record_cache(self, hits: int, misses: int, total_hits: int, total_misses: int) -> None:
        if hits:
            self.cache_hits.inc(hits)
        if misses:
            self.cache_misses.inc(misses)
        if total_hits + total_misses:
            self.cache_hit_ratio.set(total_hits / (total_hits + total_misses))

    def record_batch(
        self, size: int, queue_waits_s: Sequence[float], tokenize_s: float, total_s: float
    ) -> None:
        self.batch_size.observe(size)
        self.model_latency.observe(total_s)
        self.stage.observe(tokenize_s, tags={"stage": "tokenize"})
        self.stage.observe(max(0.0, total_s - tokenize_s), tags={"stage": "inference"})
        for wait in queue_waits_s:  # one per model call in the batch, not one per text
            self.stage.observe(wait, tags={"stage": "queue"})


class TimedTokenizer:
    """Wraps a Hugging Face tokenizer to add up the time spent in its calls.

    The classifier tokenizes inside predict(); wrapping its tokenizer lets the replica split
    model time into tokenization and inference without changing the classifier.
    Not shared between threads: the replica runs one batch at a time.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.seconds = 0.0

    def take_seconds(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._tokenizer(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


# Per-request notes from code deep in the request (the model handle call) to the middleware,
# e.g. why a 503 was returned. The middleware puts a fresh dict in place for every request.
_request_notes: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "sentiment_request_notes", default=None
)


def note_rejection(reason: str) -> None:
    notes = _request_notes.get()
    if notes is not None:
        notes["reason"] = reason


class IngressMetrics:
    """Recorded by APIIngress replicas. Create inside the replica."""

    def __init__(self) -> None:
        self.rejected = metrics.Counter(
            REJECTED, "Requests turned away, by reason.", ("reason", "route")
        )
        self.stage = _histogram(
            STAGE_LATENCY, "Seconds a request spends in each stage.", LATENCY_BOUNDARIES_S,
            ("stage",),
        )  # fmt: skip
        self.db_write = _histogram(
            DB_WRITE_LATENCY, "Seconds per prediction-log transaction (group commit).",
            LATENCY_BOUNDARIES_S,
        )  # fmt: skip
        self.db_rows = _histogram(
            DB_WRITE_ROWS, "Prediction rows per committed transaction.", BATCH_SIZE_BOUNDARIES
        )
        self.admission_wait = _histogram(
            ADMISSION_WAIT, "Wait before a request's work could start (backlog over the measured "
            "rate), as admission saw it, by work and outcome.", LATENCY_BOUNDARIES_S,
            ("work", "outcome"),
        )  # fmt: skip

    def observe_admission(self, work: str, wait_s: float, refused: str | None) -> None:
        """Admission hook: one call per decision; a refusal notes its reason for the counter."""
        outcome = "admitted" if refused is None else "refused"
        self.admission_wait.observe(wait_s, tags={"work": work, "outcome": outcome})
        if refused is not None:
            note_rejection(f"{work}_{refused}")

    def observe_model_call(self, seconds: float) -> None:
        self.stage.observe(seconds, tags={"stage": "model_call"})

    def observe_db_commit(self, rows: int, seconds: float) -> None:
        """Prediction-log commit hook: one call per committed transaction."""
        self.db_write.observe(seconds)
        self.db_rows.observe(rows)
        self.stage.observe(seconds, tags={"stage": "db_write"})

    def observe_rejection(self, status_code: int, route: str, reason: str | None = None) -> None:
        reason = reason or REJECTION_REASONS.get(status_code)
        if reason is not None:
            self.rejected.inc(tags={"reason": reason, "route": route})


class RejectionMetricsMiddleware:
    """ASGI middleware: counts every request the app turns away, by reason and route.

    Pure ASGI (no BaseHTTPMiddleware) so it adds no task per request and the handler runs in
    this task's context, where `note_rejection` can reach the notes set up here.
    """

    def __init__(self, app: Any, ingress_metrics: IngressMetrics) -> None:
        self.app = app
        self.metrics = ingress_metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        notes: dict[str, str] = {}
        token = _request_notes.set(notes)
        status: list[int] = []

        async def send_recording_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            _request_notes.reset(token)
            if status and status[0] >= 400:
                route = _route_template(scope)
                self.metrics.observe_rejection(status[0], route, notes.get("reason"))


def _route_template(scope: dict) -> str:
    """The matched route's template (bounded cardinality), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path or "unmatched"
