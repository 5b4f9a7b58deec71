"""A short way through the framework for the busiest route.

Every request to FastAPI passes through a stack of middleware (server errors, telemetry, body
limits, exception handlers, an exit stack) and then a router that tries each route in turn. For
the WhatsApp webhook, which takes most of the requests there are, that stack costs about as
much as the work of the request itself. `App` sends the requests of the few routes registered
with `add_hot_route` (exact method and path) straight to their endpoint, wrapped only in what
they need: RequestContextMiddleware (request id, metrics, the body limit, a 500 rendered without
a stack) and our AppError and HTTPException handlers. Every other request, and every other
method on the same path, goes the usual way. The route stays registered on the router as well,
so the OpenAPI schema and route labels are the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from invoiceiq.error_handlers import render_app_error, render_http_error
from invoiceiq.errors import AppError
from invoiceiq.ops.middleware import RequestContextMiddleware

Endpoint = Callable[[Request], Awaitable[Response]]


class App(FastAPI):
    """FastAPI, with a short way for the routes added by `add_hot_route`."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._hot_endpoints: dict[tuple[str, str], ASGIApp] = {}
        self._hot: dict[tuple[str, str], ASGIApp] | None = None

    def add_hot_route(self, method: str, path: str, endpoint: Endpoint) -> None:
        route = Route(path, endpoint, methods=[method], include_in_schema=False)
        self._hot_endpoints[(method, path)] = _endpoint_app(route, endpoint)
        self._hot = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            if self._hot is None:
                self._hot = self._wrap_hot_endpoints()
            hot = self._hot.get((scope["method"], scope["path"]))
            if hot is not None:
                scope["app"] = self
                await hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _wrap_hot_endpoints(self) -> dict[tuple[str, str], ASGIApp]:
        """Built at the first request, as Starlette builds its stack: the app's own
        RequestContextMiddleware, with the same options (its body limit), wraps each one."""
        options: dict[str, Any] | None = None
        for middleware in self.user_middleware:
            cls: object = middleware.cls
            if cls is RequestContextMiddleware:
                options = dict(middleware.kwargs)
        if options is None and self._hot_endpoints:
            raise RuntimeError("hot routes need the app to use RequestContextMiddleware")
        return {
            key: RequestContextMiddleware(app, **(options or {}))
            for key, app in self._hot_endpoints.items()
        }


def _endpoint_app(route: Route, endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # What the router would have recorded: the route (its template labels the metrics).
        scope["route"] = route
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except AppError as error:
            response = render_app_error(request, error)
        except HTTPException as error:  # a body over the limit (RequestContextMiddleware)
            response = render_http_error(request, error)
        await response(scope, receive, send)

    return app
