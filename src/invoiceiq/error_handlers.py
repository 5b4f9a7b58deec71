"""Render every error in the shape of DESIGN §3; stacks go to the log, never to people."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from invoiceiq.errors import AppError, error_body

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def new_error_id() -> str:
    """48 random bits after a letter: an all-digit id would be masked in logs as a phone number."""
    return "e" + uuid.uuid4().hex[:12]


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    error_id = new_error_id()
    log.info("app error", extra={"code": exc.code, "error_id": error_id})
    return JSONResponse(
        error_body(exc.code, exc.message, error_id, exc.fields), status_code=exc.status_code
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "Request refused."
    return JSONResponse(
        error_body(code, message, new_error_id()),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields: dict[str, Any] = {}
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query")]
        fields[".".join(location) or "request"] = item.get("msg", "invalid")
    return JSONResponse(
        error_body("validation_error", "Some fields are invalid.", new_error_id(), fields),
        status_code=422,
    )


def unhandled_response(exc: BaseException) -> JSONResponse:
    """Log `exc` with its stack under a new error id; people get only the id."""
    error_id = new_error_id()
    log.error("unhandled error", exc_info=exc, extra={"error_id": error_id})
    return JSONResponse(
        error_body("internal_error", "Something went wrong on our side.", error_id),
        status_code=500,
    )


async def _unhandled(_request: Request, exc: Exception) -> JSONResponse:
    # A fallback: RequestContextMiddleware renders the 500 itself, inside the request's context
    # (request id in the log line and the response). This runs only for errors raised outside it.
    return unhandled_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
