"""Errors as the API answers them: `{"error": {"code": ..., "message": ...}}`, never a bare 500."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from loa.errors import (
    ApiError,
    AudienceError,
    CampaignError,
    CapError,
    ConfigError,
    EmbeddedServerError,
    InvalidPhone,
    LoaError,
    PlanError,
    QueueError,
    TemplateError,
)

log = logging.getLogger(__name__)

# the first that matches wins: subclasses before their bases
STATUSES: Sequence[tuple[type[LoaError], int]] = (
    (TemplateError, 422),
    (PlanError, 422),
    (AudienceError, 422),
    (InvalidPhone, 422),
    (CampaignError, 409),
    (QueueError, 503),
    (EmbeddedServerError, 503),
    (ConfigError, 422),
)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def problem(exc: LoaError) -> tuple[int, str]:
    """The HTTP status and stable code of a loa error."""
    if isinstance(exc, ApiError | CapError):
        return exc.status, exc.code
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status, exc.code
    return 400, "bad_request"


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one shape of every error."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI, uploads: Path) -> None:
    """Register the handlers that turn every failure into the error shape."""
    # upload paths in messages become the client's view: "plan.toml", not our directory
    hide = re.compile(re.escape(str(uploads)) + r"/[^/\s]+/")

    async def on_loa_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LoaError)
        status, code = problem(exc)
        return error_response(status, code, hide.sub("", str(exc)))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", describe(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if isinstance(exc.__cause__, LoaError):  # raised while FastAPI read the body
            return await on_loa_error(request, exc.__cause__)
        if exc.status_code == 400 and exc.__cause__ is not None:  # a body that is not JSON text
            message = f"the body cannot be read as JSON ({type(exc.__cause__).__name__})"
            return error_response(422, "invalid_request", message)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def on_redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable", extra={"error": type(exc).__name__})
        return error_response(503, "redis_unavailable", "the data store is not reachable now")

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", extra={"error": type(exc).__name__, "path": request.url.path})
        return error_response(500, "internal_error", "internal error; the server log has more")

    app.add_exception_handler(LoaError, on_loa_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(redis.exceptions.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, on_redis_down)
    app.add_exception_handler(Exception, on_anything)


def describe(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one line: where and what, never the value (it may be a number)."""
    clauses = []
    for error in errors[:10]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        clauses.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
    return "; ".join(clauses) + more
