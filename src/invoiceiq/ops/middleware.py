"""Per-request id, one log line, and metrics: a plain ASGI middleware (cheap on the hot path).

It also refuses bodies over `MAX_BODY_BYTES` with a 413 in our error shape: a declared length at
once, a chunked body as soon as it passes the limit. Every request passes here, the hot route
too (ops/hot_routes.py), so the limit holds everywhere.

It also renders unhandled errors. Starlette hands `Exception` handlers to its outermost
ServerErrorMiddleware, which runs after this middleware has returned: the log line would lose
the request id and the 500 its X-Request-ID. Rendering here keeps both.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoiceiq.error_handlers import render_http_error, unhandled_response
from invoiceiq.ops import metrics
from invoiceiq.ops.logging import request_id_var

log = logging.getLogger("invoiceiq.http")
SLOW_REQUEST_S = 0.5
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Far above any webhook batch, STK callback, API body or invoice PDF we handle (all kilobytes);
# small enough that nobody fills the server's memory with one request.
MAX_BODY_BYTES = 4 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI lets it through its body parsing to our handler."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="The request body is too large.")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming_id, declared_length = _read_headers(scope)
        request_id = incoming_id or _new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._within_limit(scope, receive, send_with_id, declared_length)
        except Exception as exc:
            if response_started:
                log.exception("error after the response started")
                raise
            if isinstance(exc, BodyTooLarge):  # declared too long, or read outside a handler
                await render_http_error(Request(scope), exc)(scope, receive, send_with_id)
            else:
                await unhandled_response(exc, scope)(scope, receive, send_with_id)
        finally:
            _record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    async def _within_limit(
        self, scope: Scope, receive: Receive, send: Send, declared_length: int | None
    ) -> None:
        if declared_length is None:
            # Chunked: the server cannot know the size up front; count as it arrives.
            await self.app(scope, _limited(receive, self.max_body_bytes), send)
        elif declared_length > self.max_body_bytes:
            raise BodyTooLarge()  # refused before the app reads a byte
        else:
            # The server reads exactly the declared length, no more.
            await self.app(scope, receive, send)


def _record(scope: Scope, status: int, elapsed: float) -> None:
    """Count the request, and log it when it failed or was slow."""
    route = _route_label(scope)
    method = scope["method"]
    count, latency = _series(method, route, status)
    count.inc()
    latency.observe(elapsed)
    # Fast successes are counted by the metrics above; a log line each would cost a write per
    # request on the busiest paths. Errors and slow requests are logged.
    level = logging.INFO if status >= 400 or elapsed >= SLOW_REQUEST_S else logging.DEBUG
    log.log(
        level,
        "request",
        extra={"method": method, "route": route, "status": status, "ms": round(elapsed * 1000, 2)},
    )


# Request ids: a random prefix per process and a counter. Unique without a random draw per
# request (ids correlate log lines; they are not secrets). The prefix starts with a letter: an
# id of digits would be masked in the log as a phone number, and never found again.
_ID_PREFIX = "r" + secrets.token_hex(6) + "-"
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


@functools.cache
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The metric series of one (method, route template, status): looked up once, not per
    request. Few: routes are templates, and anything unmatched is one label."""
    return (
        metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)),
        metrics.HTTP_LATENCY.labels(method=method, route=route),
    )


def _read_headers(scope: Scope) -> tuple[str | None, int | None]:
    """The incoming request id (when safe to echo) and the declared body length, in one pass."""
    request_id: str | None = None
    length: int | None = None
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            request_id = text if _SAFE_ID.match(text) else None
        elif name == b"content-length":
            # The server has refused a length that is not a number before we get here.
            length = int(value) if value.isdigit() else None
    return request_id, length


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge()
        return message

    return receive_within_limit


def _route_label(scope: Scope) -> str:
    """The route template, never the raw path: paths carry secrets, tokens and phone numbers.

    The router records the matched route in the scope, and a mount adds its prefix to
    root_path. A mount whose app matched nothing inside (or has no routes, like static files)
    leaves only its app as the endpoint: it is labelled by its prefix.
    """
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    mount_root: str = scope.get("root_path", "")
    if isinstance(route, Mount) or (path is None and scope.get("endpoint") is not None):
        return f"{mount_root}/*"
    if isinstance(path, str):
        return f"{mount_root}{path}"
    return "unmatched"
