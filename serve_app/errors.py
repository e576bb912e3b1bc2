"""Every error leaves the service as JSON ``{"detail": ...}`` with the status that names it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.admission import ServiceBusyError
from serve_app.db import UNAVAILABLE_ERRORS, DatabaseUnavailableError, is_busy
from serve_app.tracing import trace_id_headers
from serve_app.write_path import DATABASE_BUSY

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "The database is unavailable; the request was not completed. Retry later."
MODEL_UNAVAILABLE = "The model is unavailable or overloaded. Retry later."
INTERNAL_ERROR = "Internal server error."


class ModelUnavailableError(RuntimeError):
    """The classifier cannot answer now (overloaded, restarting, timed out): 503.

    A ``classify`` callable raises it (the Ray wiring translates Serve's back-pressure and
    unavailable-replica errors into it); the routes raise it on a timeout.
    """

    def __init__(self, detail: str = MODEL_UNAVAILABLE, *, retry_after: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def _unavailable(detail: str, retry_after: int) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503,
                        headers={"Retry-After": str(retry_after)})


def install_error_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if is_busy(exc):  # it answers, over its bound: busy, not down
            log.warning("database busy: %s: %s", type(exc).__name__, exc)
            services = getattr(request.app.state, "services", None)
            retry_after = services.writes.retry_after() if services else retry_after_seconds
            return _unavailable(DATABASE_BUSY, retry_after)
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return _unavailable(DATABASE_UNAVAILABLE, retry_after_seconds)

    async def service_busy(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceBusyError)
        return _unavailable(exc.detail, exc.retry_after)

    async def model_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelUnavailableError)
        return _unavailable(exc.detail, exc.retry_after or retry_after_seconds)

    async def validation_failed(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Echoing raw input back can be huge (or unencodable): keep type, location and message.
        errors = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500,
                            headers=trace_id_headers(request.scope))

    app.add_exception_handler(ServiceBusyError, service_busy)
    app.add_exception_handler(DatabaseUnavailableError, database_unavailable)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, database_unavailable)
    app.add_exception_handler(ModelUnavailableError, model_unavailable)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
