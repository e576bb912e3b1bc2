"""SentimentModel: the Ray Serve deployment that runs the classifier in batches.

Each handle call (`classify(texts)`, carrying one or several HTTP requests' texts) tokenizes
its texts into windows (one per text that fits the model's window, several for a longer text)
and hands them to a `@serve.batch` method, so windows from concurrent calls share one forward
pass and a batch's size counts windows.
Answers for recently seen texts come from a per-replica LRU cache. Everything that
may change at run time (model directory, backend, batch knobs, cache size) arrives through
`user_config` and is applied in place by `reconfigure`, without restarting the replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from deployments.metrics import ModelMetrics, TimedTokenizer
from deployments.model_config import ModelConfig
from deployments.prediction_cache import PredictionCache, normalize_text
from deployments.routing import FewestInFlightRouter
from deployments.text_groups import count_texts, flatten, regroup
from deployments.tracing import record_model_batch, start_app_tracing
from serve_app.classifier import Prediction, SentimentClassifier, Window
from serve_app.settings import get_settings

logger = logging.getLogger("ray.serve")

# Measured on 2 CPU cores (see serve_config.yaml): the default of 5 ongoing requests caps
# each batch at 5 texts; 64 lets @serve.batch fill batches of 10-30 under load.
MODEL_MAX_ONGOING_REQUESTS = 64
MODEL_MAX_QUEUED_REQUESTS = 256
# A call's texts up to this many characters are tokenized on the event loop (faster than a
# thread hop); longer ones (a long text is ~10 ms) in a worker thread.
INLINE_TOKENIZE_MAX_CHARS = 4096


def _assigned_cpus() -> int:
    """Whole CPUs Ray reserved for this replica (at least 1): the torch thread count."""
    if not ray.is_initialized():  # in-process use; never connect to some cluster here
        return 1
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(round(cpus)))


@serve.deployment(
    name="SentimentModel",
    max_ongoing_requests=MODEL_MAX_ONGOING_REQUESTS,
    max_queued_requests=MODEL_MAX_QUEUED_REQUESTS,
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=10,
    health_check_timeout_s=30,
    request_router_config=RequestRouterConfig(request_router_class=FewestInFlightRouter),
)
class SentimentModel:
    def __init__(self) -> None:
        threads = _assigned_cpus()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
        self._classifier: SentimentClassifier | None = None
        self._config: ModelConfig | None = None
        self._load_error: str | None = None
        self._cache = PredictionCache(0)
        self._batch_sizes: Counter[int] = Counter()
        self._calls = 0  # handle calls received; each may carry several requests' texts
        self._metrics = ModelMetrics()
        self._tokenizer_timer: TimedTokenizer | None = None
        start_app_tracing()

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new user_config in place.

        Batch knobs and cache size change immediately. A new model directory is loaded
        beside the serving one and swapped in only once it loaded. If it fails, this replica
        keeps its old model and raises, so Serve marks the update failed (`serve status`)
        and halts the rolling update: the replicas it has not reached keep serving.
        """
        config = ModelConfig.from_user_config(user_config)
        self._classify_batch.set_max_batch_size(config.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._cache.resize(config.cache_size)

        if self._classifier is None or config.model_key != self._config.model_key:
            try:
                classifier = await asyncio.to_thread(
                    SentimentClassifier.load,
                    config.model_dir,
                    device=config.device,
                    max_length=config.max_length,
                    long_text=get_settings().long_text,
                    backend=config.backend,
                    int8=config.int8,
                )
            except Exception as exc:
                self._load_error = f"loading model {config.model_dir!r} failed: {exc}"
                logger.exception("Keeping the serving model: %s", self._load_error)
                # Name the directory: this message is what `serve status` shows operators.
                raise RuntimeError(self._load_error) from exc
            # Time tokenization apart from the forward pass (the stage metrics).
            self._tokenizer_timer = classifier.tokenizer = TimedTokenizer(classifier.tokenizer)
            self._classifier = classifier
            self._cache.clear()  # cached answers belong to the old model
            self._load_error = None
            logger.info("Serving model %s on %s", classifier.model_version, classifier.backend)
        self._config = config

    async def classify(self, texts: list[str],
                       traceparents: list[str | None] | None = None) -> list[Prediction]:
        """Handle entry point: predictions for `texts`, in order (`traceparents`: the W3C
        trace context of each text's request, when tracing)."""
        arrived_at = time.perf_counter()
        self._calls += 1
        keys = [normalize_text(t) for t in texts]
        hits, misses = self._cache.hits, self._cache.misses
        results: list[Prediction | None] = [self._cache.get(k) for k in keys]
        self._metrics.record_cache(self._cache.hits - hits, self._cache.misses - misses,
                                   self._cache.hits, self._cache.misses)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            classifier = self._classifier
            # Tokenized once, here: a long text's windows join batches like short texts, and
            # the batcher counts windows. A call's windows join batches as groups (one batch
            # item, not one per window, which saves the batcher's per-item work), in chunks
            # that each fit one batch.
            texts_to_encode = [keys[i] for i in missing]
            if sum(map(len, texts_to_encode)) <= INLINE_TOKENIZE_MAX_CHARS:
                windows = classifier.encode(texts_to_encode)
            else:
                windows = await asyncio.to_thread(classifier.encode, texts_to_encode)
            flat = flatten(windows)
            # Each window carries its request's trace context into the batch.
            flat_traceparents = traceparents and [
                traceparents[i] for i, text_windows in zip(missing, windows) for _ in text_windows]
            size = self._classify_batch._get_max_batch_size()
            starts = range(0, len(flat), size)
            chunks = [flat[start : start + size] for start in starts]
            computed = await asyncio.gather(
                *(self._classify_batch(chunk, arrived_at, classifier,
                                       traceparents and flat_traceparents[start : start + size])
                  for start, chunk in zip(starts, chunks)))
            predictions = classifier.combine(windows, flatten(computed))
            for i, prediction in zip(missing, predictions):
                results[i] = prediction
                self._cache.put(keys[i], prediction)
        self._metrics.record_labels(r.label for r in results)  # type: ignore[union-attr]
        return results  # type: ignore[return-value]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, batch_size_fn=count_texts)
    async def _classify_batch(self, groups: list[list[Window]], arrived_at: list[float],
                              classifiers: list[SentimentClassifier],
                              traceparents: list[list[str | None] | None],
                              ) -> list[list[list[float]]]:
        """One forward pass over the windows of several calls (max_batch_size counts windows).

        Each group runs on the classifier that tokenized it: a model swapped in by
        `reconfigure` meanwhile must never see another tokenizer's ids. `traceparents` holds,
        per group, each window's request context (None without tracing).
        """
        started = time.perf_counter()
        answers: list[list[list[float]]] = [[] for _ in groups]
        for classifier in {id(c): c for c in classifiers}.values():
            mine = [i for i, c in enumerate(classifiers) if c is classifier]
            members = [groups[i] for i in mine]
            # In a worker thread: torch releases the GIL, so the replica's event loop keeps
            # accepting requests and the next batch fills while this one runs.
            rows = await asyncio.to_thread(classifier.window_probabilities, flatten(members))
            for i, answer in zip(mine, regroup(rows, members)):
                answers[i] = answer
        windows = count_texts(groups)
        if self._config.batch_delay_s:
            await asyncio.sleep(self._config.batch_delay_s)
        tokenize_s = self._tokenizer_timer.take_seconds() if self._tokenizer_timer else 0.0
        ended = time.perf_counter()
        waits = [started - t for t in arrived_at]  # windows of one call waited alike
        self._metrics.record_batch(windows, waits, tokenize_s, ended - started)
        record_model_batch(traceparents, arrived_at, started=started, tokenize_s=tokenize_s,
                           ended=ended, texts=windows)
        self._batch_sizes[windows] += 1
        return answers

    def check_health(self) -> None:
        if self._classifier is None:
            raise RuntimeError(self._load_error or "no model loaded")

    def stats(self) -> dict:
        """Replica introspection for operators and tests: batch sizes seen, cache, model."""
        return {
            "replica_id": serve.get_replica_context().replica_id.unique_id,
            "model_version": self._classifier.model_version if self._classifier else None,
            "backend": self._classifier.backend if self._classifier else None,
            "labels": list(self._classifier.labels) if self._classifier else [],
            "load_error": self._load_error,
            "batch_sizes": dict(self._batch_sizes),
            "calls": self._calls,
            "max_batch_size": self._classify_batch._get_max_batch_size(),
            "batch_wait_timeout_s": self._classify_batch._get_batch_wait_timeout_s(),
            "cache": self._cache.stats(),
            "torch_threads": _torch_threads(),
        }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
