"""The current user's history: /data (filters, keyset or offset paging), /data/summary (counts
per label over time) and /data/export (CSV, streamed). Thin: the queries live in history.py."""

# No `from __future__ import annotations`: FastAPI must see the dependency's types as classes.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from serve_app.auth import AUTH_ERRORS, INVALID_TOKEN, CurrentUser, unauthorized
from serve_app.deps import ServicesDep, SessionDep
from serve_app.history import (
    Bucket,
    HistoryFilter,
    as_utc,
    export_csv,
    label_counts,
    page_query,
)
from serve_app.models import User
from serve_app.schemas import (
    DATA_LIMIT_DEFAULT,
    DATA_LIMIT_MAX,
    DATA_OFFSET_MAX,
    ErrorResponse,
    PredictionRecord,
    SummaryOut,
)

SINCE_NOT_BEFORE_UNTIL = "since must be earlier than until."
TIME_OUT_OF_RANGE = "must lie between years 1 and 9999 in UTC."
# Date, optional time (seconds and fraction optional), optional zone: 2026-03-01T09:00:00Z.
ISO_8601 = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
ID_MAX = 2**63 - 1
HISTORY_ERRORS = {
    **AUTH_ERRORS,
    422: {"model": ErrorResponse, "description": "A query parameter is out of range or malformed"},
}

router = APIRouter(tags=["history"])


async def history_filter(
    user: CurrentUser, session: SessionDep,
    label: Annotated[str | None, Query(min_length=1, max_length=64,
                                       description="only rows with this label")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description=(
        "only rows whose text contains this, in any case"))] = None,
    before_id: Annotated[int | None, Query(ge=1, le=ID_MAX, description=(
        "only rows with a smaller id: pass the last id of a page to get the next one"))] = None,
) -> HistoryFilter:
    """The filters /data and /data/export share, for a user that still exists."""
    await _require_user(session, user.id)
    return HistoryFilter(user.id, label=label, q=q, before_id=before_id)


RowsDep = Annotated[HistoryFilter, Depends(history_filter)]


async def _require_user(session: SessionDep, user_id: int) -> None:
    # A token can outlive its account; the account's rows are gone with it.
    if await session.get(User, user_id) is None:
        raise unauthorized(INVALID_TOKEN)


@router.get("/data", response_model=list[PredictionRecord], responses=HISTORY_ERRORS)
async def data(rows: RowsDep, session: SessionDep,
               limit: Annotated[int, Query(ge=1, le=DATA_LIMIT_MAX)] = DATA_LIMIT_DEFAULT,
               offset: Annotated[int, Query(ge=0, le=DATA_OFFSET_MAX, description=(
                   "rows to skip; before_id pages deep in the log without scanning them"))] = 0,
               ) -> list[PredictionRecord]:
    """The current user's logged predictions, newest first, filtered and paged."""
    found = await session.scalars(page_query(rows, limit=limit, offset=offset))
    return [PredictionRecord.model_validate(row) for row in found]


@router.get("/data/summary", response_model=SummaryOut, responses=HISTORY_ERRORS)
async def summary(user: CurrentUser, session: SessionDep,
                  bucket: Annotated[Bucket, Query(description="hour or day (UTC)")] = "day",
                  since: Annotated[str | None, Query(pattern=ISO_8601, description=(
                      "ISO 8601 date-time, inclusive; without a zone, UTC"))] = None,
                  until: Annotated[str | None, Query(pattern=ISO_8601, description=(
                      "ISO 8601 date-time, exclusive; without a zone, UTC"))] = None,
                  ) -> SummaryOut:
    """The current user's predictions counted per label per hour or day, oldest first."""
    start, end = _instant("since", since), _instant("until", until)
    if start is not None and end is not None and start >= end:
        raise HTTPException(422, SINCE_NOT_BEFORE_UNTIL)
    await _require_user(session, user.id)
    series = await label_counts(session, user_id=user.id, bucket=bucket, since=start, until=end)
    return SummaryOut(bucket=bucket, series=series)


def _instant(name: str, value: str | None) -> datetime | None:
    """A query parameter as naive UTC. Parsed here rather than by pydantic, which would also
    take numbers as Unix times: the API speaks ISO 8601 only."""
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not an ISO 8601 date-time.") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before the first UTC instant
        raise HTTPException(422, f"{name}: {TIME_OUT_OF_RANGE}") from None


@router.get("/data/export", responses={
    **HISTORY_ERRORS,
    200: {"content": {"text/csv": {}},
          "description": "id,created_at,text,label,score,model_version; newest first"},
})
async def export(rows: RowsDep, services: ServicesDep, session: SessionDep) -> StreamingResponse:
    """All of the current user's rows that match the filters, as CSV, streamed."""
    await session.close()  # the connection goes back now; each page takes one of its own
    return StreamingResponse(
        export_csv(services.sessions, rows), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="predictions.csv"'})


