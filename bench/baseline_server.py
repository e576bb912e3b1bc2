"""The naive server sentiment-serve is measured against.

What a user would write without a serving engine: one FastAPI process under uvicorn, the model
called once per text (no batching across requests or within one), and every prediction row
committed in its own transaction. Auth, settings, tables, schemas and error handling are the
service's own (imported from serve_app), so the comparison isolates serving and logging.

    DATABASE_URL=sqlite+aiosqlite:///./baseline.db SECRET_KEY=... \
        .venv/bin/uvicorn bench.baseline_server:app --port 8100

BASELINE_MODEL_DIR, when set, loads that model directory instead of the shipped model (the
bench's fast-model mode).
"""

# No `from __future__ import annotations`: FastAPI must see the request models built below.
import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serve_app import auth
from serve_app.app import start_services, stop_services
from serve_app.auth import CurrentUser
from serve_app.classifier import SentimentClassifier
from serve_app.deps import ServicesDep
from serve_app.errors import install_error_handlers
from serve_app.models import Prediction as PredictionRow
from serve_app.models import utcnow
from serve_app.schemas import BatchPredictionOut, PredictionOut, prediction_request_models
from serve_app.settings import get_settings


def create_baseline_app() -> FastAPI:
    # The group-commit log is what is being measured against; the baseline never starts it.
    settings = get_settings().model_copy(update={"prediction_logging": False})
    PredictRequest, BatchPredictRequest = prediction_request_models(
        settings.max_text_chars, settings.max_batch_texts
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        classifier = await asyncio.to_thread(SentimentClassifier.load,
                                             os.environ.get("BASELINE_MODEL_DIR") or None)

        async def classify(texts: list[str]):
            return await asyncio.to_thread(classifier.predict, texts)

        services = await start_services(classify, settings)
        app.state.services = services
        try:
            yield
        finally:
            await stop_services(services)

    app = FastAPI(title="sentiment baseline (naive)", lifespan=lifespan)
    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    app.include_router(auth.router)

    async def predict_one(services, user_id: int, text: str) -> PredictionOut:
        started = time.perf_counter()
        [prediction] = await services.classify([text])  # one text per model call
        latency_ms = (time.perf_counter() - started) * 1000.0
        row = PredictionRow(user_id=user_id, text=text, label=prediction.label,
                            score=min(1.0, max(0.0, prediction.score)),
                            model_version=prediction.model_version, latency_ms=latency_ms,
                            created_at=utcnow())  # fmt: skip
        async with services.sessions() as session:  # one transaction per row
            session.add(row)
            await session.commit()
        return PredictionOut(id=row.id, text=text, label=row.label, score=row.score,
                             scores=prediction.scores, model_version=row.model_version,
                             created_at=row.created_at, windows=prediction.windows)  # fmt: skip

    @app.post("/predict", response_model=PredictionOut)
    async def predict(body: PredictRequest, user: CurrentUser,  # type: ignore[valid-type]
                      services: ServicesDep) -> PredictionOut:  # fmt: skip
        return await predict_one(services, user.id, body.text)

    @app.post("/predict/batch", response_model=BatchPredictionOut)
    async def predict_batch(body: BatchPredictRequest, user: CurrentUser,  # type: ignore[valid-type]
                            services: ServicesDep) -> BatchPredictionOut:  # fmt: skip
        return BatchPredictionOut(
            results=[await predict_one(services, user.id, text) for text in body.texts]
        )

    @app.get("/health")
    async def health(services: ServicesDep) -> dict:
        [prediction] = await services.classify(["health check"])
        return {"status": "healthy", "model_version": prediction.model_version}

    return app


app = create_baseline_app()
