"""The service's routes: who am I, predict, batch predict, health, info (history: history_routes).

Routes stay thin: validation lives in the schemas, the logging in the prediction log.
"""

# No `from __future__ import annotations`: the request models are local to build_router,
# and FastAPI must see them as classes, not as unresolvable strings.
import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from serve_app.admission import ServiceBusyError, admission_client
from serve_app.auth import AUTH_ERRORS, INVALID_TOKEN, CurrentUser, unauthorized
from serve_app.db import UserGoneError, ping, safe_url
from serve_app.deps import Services, ServicesDep, SessionDep
from serve_app.errors import ModelUnavailableError
from serve_app.models import User, utcnow
from serve_app.ratelimit import retry_after_header
from serve_app.schemas import (
    BatchPredictionOut,
    ErrorResponse,
    HealthOut,
    InfoOut,
    Limits,
    PredictionOut,
    UserPublic,
    prediction_request_models,
)
from serve_app.security import TokenUser
from serve_app.settings import Settings
from serve_app.tracing import traced

if TYPE_CHECKING:
    from serve_app.classifier import Prediction

log = logging.getLogger(__name__)

RATE_LIMITED = "Too many texts classified; slow down."
HEALTH_PROBE_TEXT = "health check"

PREDICT_ERRORS = {
    **AUTH_ERRORS,
    413: {"model": ErrorResponse, "description": "Request body too large"},
    429: {"model": ErrorResponse, "description": RATE_LIMITED},
    503: {"model": ErrorResponse, "description": "Model or database unavailable"},
}


def _unit(value: float) -> float:
    # float32 softmax can land a hair outside [0, 1]; the contract says probability.
    return min(1.0, max(0.0, float(value)))


@traced("model_call")
async def classify(services: Services, texts: list[str]) -> list["Prediction"]:
    try:
        predictions = await services.classify(texts)
    except (ModelUnavailableError, ServiceBusyError):
        raise
    except TimeoutError as err:
        raise ModelUnavailableError() from err
    except Exception as err:  # a replica died, a handle failed: the model is unavailable
        log.exception("classifier failed")
        raise ModelUnavailableError(f"The model failed: {type(err).__name__}. Retry later.") from err
    if len(predictions) != len(texts):
        raise RuntimeError(f"classifier answered {len(predictions)} of {len(texts)} texts")
    services.model.observe(predictions[0])
    return predictions


async def predict_and_log(services: Services, user: TokenUser, texts: list[str]) -> list[PredictionOut]:
    wait = await services.rate_limits.predict(user.id, len(texts))
    if wait > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, RATE_LIMITED,
                            headers=retry_after_header(wait))
    started = time.perf_counter()
    # A refusal's Retry-After is a slot for this request: the same user sending the same texts
    # again is admitted then, while another request of that user (a script's next worker)
    # is not served in its place.
    client = admission_client.set((user.id, hash(tuple(texts))))
    try:
        predictions = await classify(services, texts)
    finally:
        admission_client.reset(client)
    latency_ms = (time.perf_counter() - started) * 1000.0
    # The rate counts windows: a long text's extra windows are charged once they are known.
    extra_windows = sum(p.windows for p in predictions) - len(texts)
    await services.rate_limits.predict_owed(user.id, extra_windows)
    now = utcnow()
    rows = [dict(user_id=user.id, text=text, label=p.label, score=_unit(p.score),
                 model_version=p.model_version, latency_ms=latency_ms, created_at=now)
            for text, p in zip(texts, predictions, strict=True)]
    ids: list[int | None] = [None] * len(rows)
    if services.prediction_log is not None:
        try:
            ids = await services.prediction_log.write(rows)
        except UserGoneError:
            raise unauthorized(INVALID_TOKEN) from None
    # Built without validation: every value is already of its field's type and range.
    return [
        PredictionOut.model_construct(
            id=row_id, text=row["text"], label=row["label"], score=row["score"],
            scores={k: _unit(v) for k, v in p.scores.items()},
            model_version=row["model_version"], created_at=row["created_at"],
            windows=p.windows)
        for row_id, row, p in zip(ids, rows, predictions, strict=True)
    ]


def json_response(body: BaseModel) -> Response:
    """`body` serialized once: FastAPI would validate a returned model against the route's
    response_model again (a second pass over every row) before serializing it."""
    return Response(body.model_dump_json(), media_type="application/json")


async def _probe(coro, timeout: float) -> str | None:
    """None if the probe answered in time, else why not."""
    try:
        async with asyncio.timeout(timeout):
            await coro
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except Exception as err:  # any failure of a dependency is "unhealthy", never a 500
        return f"{type(err).__name__}: {str(err)[:200]}"
    return None


def build_router(settings: Settings) -> APIRouter:
    PredictRequest, BatchPredictRequest = prediction_request_models(
        settings.max_text_chars, settings.max_batch_texts)
    router = APIRouter()

    @router.get("/", response_model=UserPublic, responses=AUTH_ERRORS, tags=["auth"])
    async def whoami(user: CurrentUser, session: SessionDep) -> UserPublic:
        """The user the bearer token belongs to."""
        if await session.get(User, user.id) is None:
            raise unauthorized(INVALID_TOKEN)
        return UserPublic(id=user.id, username=user.username)

    @router.post("/predict", response_model=PredictionOut, responses=PREDICT_ERRORS,
                 tags=["predict"])
    async def predict(body: PredictRequest, user: CurrentUser,  # type: ignore[valid-type]
                      services: ServicesDep) -> Response:
        """Classify one text; the answer is logged (committed) before it is returned."""
        [result] = await predict_and_log(services, user, [body.text])
        return json_response(result)

    @router.post("/predict/batch", response_model=BatchPredictionOut, responses=PREDICT_ERRORS,
                 tags=["predict"])
    async def predict_batch(body: BatchPredictRequest, user: CurrentUser,  # type: ignore[valid-type]
                            services: ServicesDep) -> Response:
        """Classify several texts, answered in input order, all logged."""
        results = await predict_and_log(services, user, body.texts)
        return json_response(BatchPredictionOut.model_construct(results=results))

    @router.get("/health", response_model=HealthOut, tags=["ops"],
                responses={503: {"model": HealthOut, "description": "Database or model down"}})
    async def health(services: ServicesDep):
        """200 when the database and the model both answer, else 503 with Retry-After."""
        timeout = services.settings.health_timeout_seconds
        db_problem, model_problem = await asyncio.gather(
            _probe(ping(services.engine), timeout),
            _probe(classify(services, [HEALTH_PROBE_TEXT]), timeout))
        body = HealthOut(status="healthy", database=db_problem or "ok",
                         model=model_problem or "ok", model_version=services.model.model_version)
        if db_problem is None and model_problem is None:
            return body
        body.status = "unhealthy"
        body.detail = "; ".join(
            f"{name} {problem}" for name, problem in
            (("database", db_problem), ("model", model_problem)) if problem)
        if db_problem:
            body.detail += f" ({safe_url(services.settings.database_url)})"
        return JSONResponse(body.model_dump(), status_code=503,
                            headers={"Retry-After": str(services.settings.retry_after_seconds)})

    @router.get("/info", response_model=InfoOut, tags=["ops"],
                responses={503: {"model": ErrorResponse}})
    async def info(services: ServicesDep) -> InfoOut:
        """The model that answers and the request limits in force."""
        if services.model.model_version is None:
            await classify(services, [HEALTH_PROBE_TEXT])
        s = services.settings
        return InfoOut(model_version=services.model.model_version or "", labels=services.model.labels,
                       limits=Limits(max_text_chars=s.max_text_chars,
                                     max_batch_texts=s.max_batch_texts,
                                     max_body_bytes=s.max_body_bytes))

    return router
