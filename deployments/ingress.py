"""APIIngress: the FastAPI application from `serve_app`, served by Ray Serve.

The app is built inside each replica (`__serve_build_asgi_app__`), so its database
engine, settings and background writer belong to the replica process and nothing is
created at import time. The app's one link to the model is `classify`, which makes one
handle call per HTTP request; the model replica splits the texts into batches.
"""

from __future__ import annotations

import math
import time

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.metrics import (
    MODEL_OVERLOADED,
    MODEL_UNAVAILABLE,
    IngressMetrics,
    RejectionMetricsMiddleware,
    note_rejection,
)
from serve_app.app import create_app
from serve_app.classifier import Prediction
from serve_app.errors import ModelUnavailableError

# Measured on 2 CPU cores (see serve_config.yaml): every request waits here while the
# model batches, so the ingress must admit far more than the model's batch size.
INGRESS_MAX_ONGOING_REQUESTS = 256
MODEL_BUSY_RETRY_AFTER_S = 1


@serve.deployment(
    name="APIIngress",
    max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 0},  # I/O-bound: leaves the cores to the model
)
@serve.ingress()
class APIIngress:
    def __init__(self, model: DeploymentHandle) -> None:
        self._model = model
        self._metrics = IngressMetrics()

    def __serve_build_asgi_app__(self):
        app = create_app(self.classify, on_log_commit=self._metrics.observe_db_commit)
        app.add_middleware(RejectionMetricsMiddleware, ingress_metrics=self._metrics)
        return app

    async def classify(self, texts: list[str]) -> list[Prediction]:
        started = time.perf_counter()
        try:
            try:
                predictions = await self._model.classify.remote(texts)
                self._metrics.observe_model_call(time.perf_counter() - started)
                return predictions
            except (ActorDiedError, ActorUnavailableError):
                # The replica died with this request on it. Classifying is idempotent (the
                # answer is logged here, after the call), so send it once more: the router
                # has dropped the dead replica and picks a live one.
                return await self._model.classify.remote(texts)
        except BackPressureError as exc:
            # The model's queue is full: shed load now (503) rather than time out later.
            retry_after = math.ceil(exc.retry_after_s or MODEL_BUSY_RETRY_AFTER_S)
            note_rejection(MODEL_OVERLOADED)
            raise ModelUnavailableError("The model is overloaded; retry shortly.",
                                        retry_after=retry_after) from exc
        except DeploymentUnavailableError as exc:
            note_rejection(MODEL_UNAVAILABLE)
            raise ModelUnavailableError("The model has no running replica; retry shortly.",
                                        retry_after=MODEL_BUSY_RETRY_AFTER_S) from exc
