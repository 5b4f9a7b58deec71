"""Per-request id, one log line, and metrics: a plain ASGI middleware (cheap on the hot path).

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

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoiceiq.error_handlers import unhandled_response
from invoiceiq.ops import metrics
from invoiceiq.ops.logging import request_id_var

log = logging.getLogger("invoiceiq.http")
SLOW_REQUEST_S = 0.5
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or _new_request_id()
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
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                log.exception("error after the response started")
                raise
            await unhandled_response(exc, scope)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(scope)
            method = scope["method"]
            count, latency = _series(method, route, status)
            count.inc()
            latency.observe(elapsed)
            # Fast successes are counted by the metrics above; a log line each would cost a write
            # per request on the busiest paths. Errors and slow requests are logged.
            level = logging.INFO if status >= 400 or elapsed >= SLOW_REQUEST_S else logging.DEBUG
            log.log(
                level,
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


# Request ids: a random prefix per process and a counter. Unique without a random draw per
# request (ids correlate log lines; they are not secrets).
_ID_PREFIX = secrets.token_hex(6) + "-"
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


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            return text if _SAFE_ID.match(text) else None
    return None


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
