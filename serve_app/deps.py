"""What routes depend on, named once as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from serve_app.admission import AdmissionGate
from serve_app.api_keys import ApiKeyVerifier
from serve_app.db import PredictionLog
from serve_app.ratelimit import RateLimits
from serve_app.security import TokenCodec
from serve_app.settings import Settings
from serve_app.write_path import WritePath

if TYPE_CHECKING:
    from serve_app.classifier import Prediction

Classify = Callable[[list[str]], Awaitable[list["Prediction"]]]


@dataclass
class ModelInfo:
    """What the model last said about itself (updated from every answer, so a model swapped
    in place shows its new version)."""

    model_version: str | None = None
    labels: list[str] = field(default_factory=list)

    def observe(self, prediction: "Prediction") -> None:
        self.model_version = prediction.model_version
        self.labels = list(prediction.scores)


@dataclass
class Services:
    """Everything the app holds while running; built by the lifespan, inside the process."""

    settings: Settings
    classify: Classify
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    writes: WritePath  # every write transaction takes its turn here (ordered on SQLite)
    prediction_log: PredictionLog | None
    tokens: TokenCodec
    api_keys: ApiKeyVerifier
    rate_limits: RateLimits
    hashing: AdmissionGate  # password hashes of sign-ups and log-ins
    model: ModelInfo = field(default_factory=ModelInfo)


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop
    # per request for an attribute lookup.
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(503, "The service is starting.", headers={"Retry-After": "1"})
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
