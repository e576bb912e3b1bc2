"""APIIngress: the FastAPI application from `serve_app`, served by Ray Serve.

The app is built inside each replica (`__serve_build_asgi_app__`), so its database
engine, settings and background writer belong to the replica process and nothing is
created at import time. The app's one link to the model is `classify`. Texts of requests
that arrive while the model is busy travel together in one handle call: each call costs
both replicas routing and transport work, which on a few cores takes the CPU the model
needs (see serve_config.yaml). The model replica still batches across ingress replicas.
"""

from __future__ import annotations

import math
import time

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.job_submitter import RayJobSubmitter
from deployments.metrics import (
    MODEL_OVERLOADED,
    MODEL_UNAVAILABLE,
    IngressMetrics,
    RejectionMetricsMiddleware,
    note_rejection,
)
from deployments.text_groups import flatten, regroup
from deployments.tracing import start_app_tracing, traceparent_per_text
from serve_app.admission import AdmissionGate
from serve_app.app import create_app
from serve_app.classifier import Prediction
from serve_app.errors import ModelUnavailableError
from serve_app.settings import get_settings
from serve_app.tracing import current_traceparent

# Measured on 2 CPU cores (see serve_config.yaml): every request waits here while the
# model batches, so the ingress must admit far more than the model's batch size.
INGRESS_MAX_ONGOING_REQUESTS = 512
MODEL_BUSY_RETRY_AFTER_S = 1
# Requests of up to COALESCE_MAX_TEXTS texts share handle calls, up to
# COALESCE_MAX_REQUESTS per call; larger requests are worth a call of their own. Several
# calls in flight let a model replica start its next batch while the previous answer travels
# back, and keep two model replicas fed (with 2, one ingress never pushed the model past its
# autoscaling target and 32 clients got half the throughput of 4).
# This caps the model's ongoing requests per ingress replica, which is why its autoscaling
# target in serve_config.yaml is low.
COALESCE_MAX_TEXTS = 8
COALESCE_MAX_REQUESTS = 32
MODEL_CALLS_IN_FLIGHT = 4
# Admission (serve_app/admission.py): a request whose texts could not start on the model within
# ADMISSION_TARGET_WAIT_SECONDS gets 503 + Retry-After at once. Its count backstop
# (ADMISSION_MAX_WAITING_TEXTS) stays below max_ongoing_requests so that load is shed here and
# not in Serve's proxy queue, whose router polls a full replica with growing back-off and
# leaves the model idle while clients wait.


@serve.deployment(
    name="APIIngress",
    max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 0},  # I/O-bound: leaves the cores to the model
)
@serve.ingress()
class APIIngress:
    def __init__(self, model: DeploymentHandle) -> None:
        self._model = model
        self._model_calls = 0  # handle calls in flight
        self._metrics = IngressMetrics()
        settings = get_settings()
        self._admission = AdmissionGate(
            "model", target_wait_s=settings.admission_target_wait_seconds,
            max_waiting=settings.admission_max_waiting_texts,
            on_decision=self._metrics.observe_admission)
        start_app_tracing()

    def __serve_build_asgi_app__(self):
        app = create_app(self.classify, on_log_commit=self._metrics.observe_db_commit,
                         on_admission=self._metrics.observe_admission,
                         job_runner=RayJobSubmitter(get_settings()))
        app.add_middleware(RejectionMetricsMiddleware, ingress_metrics=self._metrics)
        return app

    async def classify(self, texts: list[str]) -> list[Prediction]:
        traceparent = current_traceparent()  # None unless tracing: carried to the model
        with self._admission.admit(len(texts)):  # or 503 + Retry-After at once
            # A large request, or one with no call in flight to share with, goes in a call of
            # its own, past the batcher's queue and task hops.
            if len(texts) > COALESCE_MAX_TEXTS or self._model_calls == 0:
                return await self._call_model(texts, traceparent_per_text([texts], [traceparent]))
            return await self._classify_coalesced(texts, traceparent)

    # No wait: a call leaves at once when one is free, and requests queue only while every
    # call is out, so sharing calls never delays a request on an idle service.
    @serve.batch(max_batch_size=COALESCE_MAX_REQUESTS, batch_wait_timeout_s=0.0,
                 max_concurrent_batches=MODEL_CALLS_IN_FLIGHT)
    async def _classify_coalesced(self, requests: list[list[str]],
                                  traceparents: list[str | None]) -> list[list[Prediction]]:
        return regroup(await self._call_model(
            flatten(requests), traceparent_per_text(requests, traceparents)), requests)

    async def _call_model(self, texts: list[str],
                          traceparents: list[str | None] | None) -> list[Prediction]:
        started = time.perf_counter()
        self._model_calls += 1
        try:
            try:
                predictions = await self._model.classify.remote(texts, traceparents)
                self._metrics.observe_model_call(time.perf_counter() - started)
                return predictions
            except (ActorDiedError, ActorUnavailableError):
                # The replica died with this request on it. Classifying is idempotent (the
                # answer is logged here, after the call), so send it once more: the router
                # has dropped the dead replica and picks a live one.
                return await self._model.classify.remote(texts, traceparents)
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
        finally:
            self._model_calls -= 1
