"""Request and response bodies, with their limits.

The text limits come from Settings, so the request models are built per app by
``prediction_request_models``; the OpenAPI schema then documents the limits in force.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
USERNAME_MIN, USERNAME_MAX = 3, 64
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DATA_LIMIT_DEFAULT, DATA_LIMIT_MAX = 50, 500
DATA_OFFSET_MAX = 1_000_000_000


def _encodable(value: str) -> str:
    # json.loads accepts lone surrogates ("\ud800"); they cannot be stored or hashed as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (lone surrogates are not allowed)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be empty or whitespace only")
    return value


def _as_utc(value: datetime) -> str:
    # Both databases hand back naive UTC; say so explicitly on the wire.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


UtcDatetime = Annotated[datetime, PlainSerializer(_as_utc, return_type=str)]


class ErrorResponse(BaseModel):
    detail: str | list | dict


class UserCreate(BaseModel):
    username: Annotated[str, StringConstraints(min_length=USERNAME_MIN, max_length=USERNAME_MAX,
                                               pattern=USERNAME_PATTERN)] = Field(
        description=f"{USERNAME_MIN}-{USERNAME_MAX} characters of A-Z a-z 0-9 _ . -",
        examples=["alice"],
    )
    password: Annotated[str, StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX),
                        AfterValidator(_encodable)] = Field(examples=["correct horse battery"])


class UserPublic(BaseModel):
    id: int
    username: str


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


API_KEY_NAME_MAX = 64


class ApiKeyCreate(BaseModel):
    # The pattern (unanchored, as in JSON Schema) asks for one visible character.
    name: Annotated[str, StringConstraints(min_length=1, max_length=API_KEY_NAME_MAX,
                                           pattern=r"\S"),
                    AfterValidator(_encodable)] = Field(
        description=f"1-{API_KEY_NAME_MAX} characters, to tell keys apart",
        examples=["nightly job"])


class ApiKeyPublic(BaseModel):
    """A key as listed: never the key itself."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None = Field(description="to the minute; null if never used")


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    prefix: str
    key: str = Field(description="the key itself: shown this once, store it now")
    created_at: UtcDatetime


class PredictionOut(BaseModel):
    """One prediction as answered by /predict and /predict/batch."""

    id: int | None = Field(description="row id in the prediction log (null when logging is off)")
    text: str
    label: str
    score: float = Field(ge=0, le=1)
    scores: dict[str, float]
    model_version: str
    created_at: UtcDatetime
    windows: int = Field(ge=1, description="token windows the text was classified over "
                                           "(1 when it fits the model's window)")


class BatchPredictionOut(BaseModel):
    results: list[PredictionOut]


class PredictionRecord(BaseModel):
    """One logged row as listed by /data."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    text: str
    label: str
    score: float
    model_version: str
    latency_ms: float
    created_at: UtcDatetime


class SummaryBucket(BaseModel):
    start: UtcDatetime = Field(description="the hour's or day's first instant, UTC")
    counts: dict[str, int] = Field(description="predictions per label in this bucket")


class SummaryOut(BaseModel):
    """Counts per label per bucket, oldest first; buckets without predictions are left out."""

    bucket: Literal["hour", "day"]
    series: list[SummaryBucket]


class HealthOut(BaseModel):
    status: Literal["healthy", "unhealthy"]
    database: str
    model: str
    model_version: str | None = None
    detail: str | None = None


class Limits(BaseModel):
    max_text_chars: int
    max_batch_texts: int
    max_body_bytes: int


class InfoOut(BaseModel):
    model_version: str
    labels: list[str]
    limits: Limits


def prediction_request_models(max_text_chars: int, max_batch_texts: int):
    """Build (PredictRequest, BatchPredictRequest) enforcing the configured limits."""
    Text = Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_text_chars),
        AfterValidator(_not_blank),
        AfterValidator(_encodable),
    ]

    class PredictRequest(BaseModel):
        text: Text = Field(
            validation_alias=AliasChoices("text", "prompt"),
            description=f"text to classify, 1-{max_text_chars} characters (alias: prompt)",
            examples=["I love this product!"],
        )

    class BatchPredictRequest(BaseModel):
        texts: list[Text] = Field(
            min_length=1, max_length=max_batch_texts,
            description=f"1-{max_batch_texts} texts, answered in the same order",
            examples=[["great service", "terrible food"]],
        )

    return PredictRequest, BatchPredictRequest
