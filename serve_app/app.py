"""The FastAPI application: ``create_app(classify)``, free of Ray.

``classify`` is any async ``texts -> predictions`` callable: in process it runs
``SentimentClassifier.predict`` in a thread (``in_process_classify``); under Ray Serve it calls
the model deployment's handle. Everything stateful (engine, prediction log, rate-limit backend,
signing key) is created by the lifespan, inside the running process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from serve_app import api_key_routes, auth, history_routes, job_routes, routes
from serve_app.admission import AdmissionGate, AdmissionHook
from serve_app.api_keys import ApiKeyVerifier, derive_hash_key
from serve_app.body_limit import BodySizeLimitMiddleware
from serve_app.db import (
    PredictionLog,
    check_schema_at_head,
    create_engine,
    create_session_factory,
    create_write_path,
)
from serve_app.deps import Classify, Services
from serve_app.errors import install_error_handlers
from serve_app.job_store import JobStore
from serve_app.jobs import JobRunner, Jobs
from serve_app.ratelimit import RateLimits, create_rate_limiter
from serve_app.schemas import ErrorResponse
from serve_app.security import TokenCodec, resolve_secret_key
from serve_app.settings import Settings, get_settings
from serve_app.tracing import TraceMiddleware, install_log_trace_ids

if TYPE_CHECKING:
    from serve_app.classifier import Prediction, SentimentClassifier

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["Classify", "LogCommitHook", "create_app", "in_process_classify"]

# (rows, seconds) of each committed prediction-log transaction; how metrics see the database.
LogCommitHook = Callable[[int, float], None]


def in_process_classify(classifier: SentimentClassifier) -> Classify:
    """Run the classifier in a worker thread, one call per request (tests, baselines)."""

    async def classify(texts: list[str]) -> list[Prediction]:
        return await asyncio.to_thread(classifier.predict, texts)

    return classify


async def start_services(classify: Classify, settings: Settings, *,
                         on_log_commit: LogCommitHook | None = None,
                         on_admission: AdmissionHook | None = None) -> Services:
    secret_key = resolve_secret_key(settings)  # production without a strong key stops here
    engine = create_engine(settings)
    try:
        await check_schema_at_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    sessions = create_session_factory(engine)
    writes = create_write_path(settings)
    prediction_log = None
    if settings.prediction_logging:
        prediction_log = PredictionLog(sessions, max_batch=settings.prediction_log_max_batch,
                                       timeout_s=settings.prediction_log_timeout_seconds,
                                       writes=writes, on_commit=on_log_commit)
        prediction_log.start()
    else:
        log.warning("PREDICTION_LOGGING is off: predictions are not written to the database")
    rate_limits = RateLimits(
        create_rate_limiter(settings.redis_url, key_prefix=settings.rate_limit_key_prefix),
        predict_rate=settings.predict_rate_per_second,
        predict_burst=settings.predict_burst,
        login_max_failures_per_username=settings.login_max_failures_per_username,
        login_max_failures_per_client=settings.login_max_failures_per_client,
        login_failure_window_s=settings.login_failure_window_seconds,
    )
    tokens = TokenCodec(secret_key=secret_key, algorithm=settings.algorithm,
                        expire_minutes=settings.access_token_expire_minutes)
    api_keys = ApiKeyVerifier(sessions, hash_key=derive_hash_key(secret_key),
                              cache_ttl_s=settings.api_key_cache_seconds)
    hashing = AdmissionGate("password_hash", target_wait_s=settings.admission_target_wait_seconds,
                            max_waiting=settings.admission_max_waiting_hashes,
                            on_decision=on_admission)
    return Services(settings=settings, classify=classify, engine=engine, sessions=sessions,
                    writes=writes, prediction_log=prediction_log, tokens=tokens,
                    api_keys=api_keys, rate_limits=rate_limits, hashing=hashing)


async def stop_services(services: Services) -> None:
    if services.prediction_log is not None:
        await services.prediction_log.close()  # write what is queued before letting go
    await services.api_keys.close()
    await services.rate_limits.backend.close()
    await services.engine.dispose()
    services.writes.close()


def create_app(classify: Classify, settings: Settings | None = None, *,
               on_log_commit: LogCommitHook | None = None,
               on_admission: AdmissionHook | None = None,
               job_runner: JobRunner | None = None) -> FastAPI:
    """`on_log_commit(rows, seconds)` is called after each prediction-log transaction, and
    `on_admission(work, wait_s, refusal_reason)` at each admission decision (metrics).
    `job_runner` starts bulk jobs (/jobs); without one, /jobs answers 503."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(classify, settings, on_log_commit=on_log_commit,
                                        on_admission=on_admission)
        app.state.services = services
        app.state.jobs = None if job_runner is None else Jobs(
            settings=settings, store=await asyncio.to_thread(JobStore.from_settings, settings),
            runner=job_runner, sessions=services.sessions, writes=services.writes)
        try:
            yield
        finally:
            app.state.services = app.state.jobs = None
            await stop_services(services)

    app = FastAPI(
        title="sentiment-serve",
        version="0.1.0",
        description="Sentiment analysis with a logged history per user. Log in at "
                    "`POST /auth/token`, then send `Authorization: Bearer <token>`. Machine "
                    "clients use an API key (`POST /auth/keys`) as `Authorization: Bearer "
                    "<key>` or `X-API-Key: <key>`.",
        lifespan=lifespan,
        # FastAPI's own spans take their parent from the traceparent header, which would cut
        # Ray Serve's replica span out of the trace; TraceMiddleware makes the request span.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        responses={
            400: {"model": ErrorResponse, "description": "Body not decodable"},
            413: {"model": ErrorResponse, "description": "Request body too large"},
            503: {"model": ErrorResponse, "description": "Database or model unavailable"},
        },
    )
    # An upload's multipart framing and form fields come on top of the file itself.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes,
                       path_limits={"/jobs": settings.max_upload_bytes + (1 << 20)})
    app.add_middleware(TraceMiddleware)  # outside the size limit: a 413 carries X-Trace-Id too
    install_log_trace_ids()
    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    app.include_router(auth.router)
    app.include_router(api_key_routes.router)
    app.include_router(routes.build_router(settings))
    app.include_router(history_routes.router)
    app.include_router(job_routes.router)
    if (STATIC_DIR / "index.html").is_file():
        app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    return app
