"""The short way through the framework (ops/hot_routes.py): the same answers, errors, request
ids and metrics as the usual way, for the routes registered hot and no others."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from conftest import make_settings
from invoiceiq.error_handlers import install_error_handlers
from invoiceiq.errors import AppError
from invoiceiq.main import create_app
from invoiceiq.ops.hot_routes import App
from invoiceiq.ops.middleware import RequestContextMiddleware

SECRET_DETAIL = "provider said: token abc123 for 254712345678"


class Refused(AppError):
    code = "refused"
    status_code = 409
    message = "Not now."


async def hot(request: Request) -> Response:
    what = request.query_params.get("do")
    if what == "refuse":
        raise Refused()
    if what == "crash":
        raise RuntimeError(SECRET_DETAIL)
    return JSONResponse({"hot": True, "body": (await request.body()).decode()})


class PathsSeen:
    """A middleware of the usual stack: records the paths that went through it."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@pytest.fixture
def usual() -> list[str]:
    return []


@pytest.fixture
async def client(usual: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    app = App()
    app.add_middleware(PathsSeen, seen=usual)
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.add_api_route("/hot-test", hot, methods=["POST"])
    app.add_hot_route("POST", "/hot-test", hot)

    @app.get("/hot-test")
    async def usual_get() -> dict[str, bool]:
        return {"hot": False}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def count(route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "invoiceiq_http_requests_total", {"method": "POST", "route": route, "status": str(status)}
    )
    return value or 0.0


async def test_only_the_hot_method_and_path_skip_the_usual_stack(
    client: httpx.AsyncClient, usual: list[str]
) -> None:
    posted = await client.post("/hot-test", content=b"hello")
    got = await client.get("/hot-test")
    other = await client.post("/hot-test/other")

    assert posted.json() == {"hot": True, "body": "hello"}
    assert got.json() == {"hot": False}
    assert other.status_code == 404
    assert usual == ["GET /hot-test", "POST /hot-test/other"]


async def test_a_hot_answer_has_a_request_id_and_is_counted_under_its_route(
    client: httpx.AsyncClient,
) -> None:
    before = count("/hot-test", 200)

    fresh = await client.post("/hot-test")
    given = await client.post("/hot-test", headers={"X-Request-ID": "from-the-proxy.1"})

    assert fresh.headers["x-request-id"]
    assert given.headers["x-request-id"] == "from-the-proxy.1"
    assert count("/hot-test", 200) == before + 2


async def test_an_app_error_on_the_hot_way_is_rendered_as_on_the_usual_way(
    client: httpx.AsyncClient,
) -> None:
    before = count("/hot-test", 409)

    response = await client.post("/hot-test?do=refuse")

    assert response.status_code == 409
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["message"]) == ("refused", "Not now.")
    assert error["error_id"]
    assert response.headers["x-request-id"]
    assert count("/hot-test", 409) == before + 1


async def test_a_crash_on_the_hot_way_is_a_500_with_an_id_and_the_stack_only_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.post("/hot-test?do=crash")

    assert response.status_code == 500
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "internal_error"
    assert SECRET_DETAIL not in response.text
    assert response.headers["x-request-id"]
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and getattr(logged[0], "error_id", None) == error["error_id"]


async def test_a_request_under_a_root_path_goes_the_usual_way(usual: list[str]) -> None:
    # Behind a proxy that mounts the app under a prefix, the path alone does not say which route
    # it is: the usual router decides. The scope is built by hand so that its path is exactly
    # the hot one while a root path is set.
    app = App()
    app.add_middleware(PathsSeen, seen=usual)
    app.add_api_route("/hot-test", hot, methods=["POST"])
    app.add_hot_route("POST", "/hot-test", hot)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/hot-test",
        "raw_path": b"/hot-test",
        "root_path": "/behind-a-proxy",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)

    assert sent[0]["status"] == 200
    assert usual == ["POST /hot-test"]


def test_the_app_has_no_middleware_the_hot_way_would_skip() -> None:
    # The hot way wraps its routes in RequestContextMiddleware only: a middleware added to the
    # app later (a body limit, CORS, authentication…) would not apply to them. Whoever adds one
    # decides here whether the hot routes need it too.
    app = create_app(make_settings(database_url="sqlite+aiosqlite:///unused.db"))

    assert [m.cls for m in app.user_middleware] == [RequestContextMiddleware]
