"""Render every error: JSON in the shape of DESIGN §3, or an HTML page for people's browsers.

One handler per kind of error (STYLE §11). A browser asking for a page (`Accept: text/html`,
outside /api/) gets an HTML page with a short message and the error id; everything else, the
page's own script included (it asks for JSON), gets the JSON shape. Stacks go to the log,
never to people.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from invoiceiq.db.engine import is_database_down
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
_HTTP_MESSAGES = {
    404: "There is no page at this address. Check the link you opened.",
    405: "This address doesn't accept that kind of request.",
}
# Where a parameter came from is not part of its name for the person reading the error.
_LOCATIONS = ("body", "query", "path", "header", "cookie")


def new_error_id() -> str:
    """48 random bits after a letter: an all-digit id would be masked in logs as a phone number."""
    return "e" + uuid.uuid4().hex[:12]


def wants_html(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    if path.startswith("/api/"):
        return False
    for name, value in scope.get("headers", []):
        if name == b"accept":
            return b"text/html" in value
    return False


def _render(
    request: Request | Scope,
    *,
    status_code: int,
    code: str,
    message: str,
    error_id: str,
    fields: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    back_url: str | None = None,
) -> Response:
    # Every error id people see can be found in the log (the RUNBOOK tells them to quote it).
    log.info("error answered", extra={"status": status_code, "code": code, "error_id": error_id})
    scope = request.scope if isinstance(request, Request) else request
    if wants_html(scope):
        # Imported here: the web package renders pages and must not load for JSON-only use.
        from invoiceiq.web.render import error_page

        return error_page(
            status_code=status_code,
            message=message,
            error_id=error_id,
            back_url=back_url,
            headers=dict(headers or {}),
        )
    return JSONResponse(
        error_body(code, message, error_id, fields), status_code=status_code, headers=headers
    )


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return render_app_error(request, exc)


def render_app_error(request: Request, exc: AppError) -> Response:
    error_id = new_error_id()
    return _render(
        request,
        status_code=exc.status_code,
        code=exc.code,
        message=exc.message,
        error_id=error_id,
        fields=exc.fields,
        headers=getattr(exc, "headers", None),
        back_url=getattr(exc, "back_url", None),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return render_http_error(request, exc)


def render_http_error(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "Request refused."
    if wants_html(request.scope):
        message = _HTTP_MESSAGES.get(exc.status_code, message)
    return _render(
        request,
        status_code=exc.status_code,
        code=code,
        message=message,
        error_id=new_error_id(),
        headers=exc.headers,
    )


# Pydantic's wording for the common mistakes, in ours (its own for the rest); `{…}` from the
# error's context.
_PLAIN_WORDS = {
    "missing": "Required.",
    "extra_forbidden": "Not a field of this request; check its spelling.",
    "string_type": "Must be text (in quotes).",
    "string_too_short": "Too short: use at least {min_length} characters.",
    "string_too_long": "Too long: use at most {max_length} characters.",
    "string_pattern_mismatch": "Not in the expected form.",
    "int_type": "Must be a whole number, like 1500 (not text, not a decimal).",
    "int_from_float": "Must be a whole number, like 1500 (not a decimal).",
    "int_parsing": "Must be a whole number, like 1500.",
    "greater_than_equal": "Must be at least {ge}.",
    "less_than_equal": "Must be at most {le}.",
    "enum": "Must be one of: {expected}.",
}


def _in_plain_words(item: Mapping[str, Any]) -> str:
    kind = item.get("type", "")
    if kind == "string_too_short" and (item.get("ctx") or {}).get("min_length") == 1:
        return "Must not be empty."
    template = _PLAIN_WORDS.get(kind)
    if template is None:
        return str(item.get("msg", "Invalid."))
    try:
        return template.format(**(item.get("ctx") or {}))
    except (KeyError, IndexError):
        return str(item.get("msg", "Invalid."))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields: dict[str, Any] = {}
    for item in exc.errors():
        if item.get("type") == "json_invalid":
            # Not a field: the body is not JSON at all (pydantic names the offset, "1").
            fields["body"] = "The request body is not valid JSON."
            continue
        location = [str(part) for part in item.get("loc", ()) if part not in _LOCATIONS]
        if not location and tuple(item.get("loc", ())) == ("body",):
            # The body as a whole: none sent, or not an object of fields (`[]`, `1500`).
            missing = item.get("type") == "missing"
            fields["body"] = (
                "The request needs a JSON body." if missing else "The body must be a JSON object."
            )
            continue
        fields[".".join(location) or "request"] = _in_plain_words(item)
    return _render(
        request,
        status_code=422,
        code="validation_error",
        message="Some fields are invalid.",
        error_id=new_error_id(),
        fields=fields,
    )


# The database could not be reached (or the connection broke): the service is unavailable
# for a while, not broken, so a 503 that clients and monitors retry, not a 500 that pages.
DATABASE_DOWN_RETRY_AFTER_S = 30
DATABASE_DOWN_MESSAGE = "We can't reach our database just now. Please try again in a minute."
INTERNAL_MESSAGE = "Something went wrong on our side."


def unhandled_response(exc: BaseException, scope: Scope | None = None) -> Response:
    """Log `exc` with its stack under a new error id; people get only the id."""
    error_id = new_error_id()
    log.error("unhandled error", exc_info=exc, extra={"error_id": error_id})
    if is_database_down(exc):
        status, code, message = 503, "unavailable", DATABASE_DOWN_MESSAGE
        headers = {"Retry-After": str(DATABASE_DOWN_RETRY_AFTER_S)}
    else:
        status, code, message, headers = 500, "internal_error", INTERNAL_MESSAGE, {}
    return _render(
        scope or {},
        status_code=status,
        code=code,
        message=message,
        error_id=error_id,
        headers=headers,
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    # A fallback: RequestContextMiddleware renders the 500 itself, inside the request's context
    # (request id in the log line and the response). This runs only for errors raised outside it.
    return unhandled_response(exc, request.scope)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
