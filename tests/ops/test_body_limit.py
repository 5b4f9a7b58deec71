"""Request bodies over the limit are refused with a 413 in our error shape, on every route.

A declared length over the limit is refused before the body is read; a chunked body (no
declared length) as soon as it passes the limit. The hot route gets the same answer as the
usual way, and nothing of a refused request is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from invoiceiq.db.engine import SessionFactory
from invoiceiq.error_handlers import install_error_handlers
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.ops.hot_routes import App
from invoiceiq.ops.middleware import MAX_BODY_BYTES, RequestContextMiddleware
from support.apps import client_for, in_process
from support.db import make_settings
from support.webhooks import PATH, SECRET_HEADERS, envelope, text_message

LIMIT = 16


async def echo(request: Request) -> Response:
    return JSONResponse({"length": len(await request.body())})


class Note(BaseModel):
    text: str


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An app with a 16-byte limit: a hot route, a raw body route, a JSON model route."""
    app = App()
    app.add_middleware(RequestContextMiddleware, max_body_bytes=LIMIT)
    install_error_handlers(app)
    app.add_api_route("/hot", echo, methods=["POST"])
    app.add_hot_route("POST", "/hot", echo)
    app.add_api_route("/raw", echo, methods=["POST"])

    @app.post("/model")
    async def model(note: Note) -> dict[str, int]:
        return {"length": len(note.text)}

    async with client_for(app) as client:
        yield client


async def chunked(body: bytes, size: int = 4) -> AsyncIterator[bytes]:
    """A body without a declared length, sent `size` bytes at a time."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def body_of(size: int, route: str) -> bytes:
    if route == "/model":  # JSON the model accepts, `size` bytes long
        return b'{"text":"' + b"x" * (size - 11) + b'"}'
    return b"x" * size


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "too_large"
    assert error["message"] == "The request body is too large."
    assert error["error_id"]
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("route", ["/hot", "/raw", "/model"])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
async def test_a_body_at_the_limit_passes_and_one_byte_more_is_refused(
    client: httpx.AsyncClient, route: str, declared: bool
) -> None:
    at_limit, over = body_of(LIMIT, route), body_of(LIMIT + 1, route)
    headers = {"content-type": "application/json"}

    def send(body: bytes) -> Any:
        content = body if declared else chunked(body)
        return client.post(route, content=content, headers=headers)

    accepted = await send(at_limit)
    assert accepted.status_code == 200, accepted.text
    assert_too_large(await send(over))


class ReadsTheBody:
    """A middleware that reads the whole body before the app (as a signature check would)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            while (await receive()).get("more_body", False):
                pass
        await self.app(scope, receive, send)


async def test_a_body_read_outside_any_handler_is_still_refused_with_a_413() -> None:
    app = App()
    app.add_middleware(ReadsTheBody)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=LIMIT)
    install_error_handlers(app)
    app.add_api_route("/raw", echo, methods=["POST"])
    async with client_for(app) as client:
        response = await client.post("/raw", content=chunked(b"x" * (LIMIT + 1)))
    assert_too_large(response)


async def test_a_request_without_a_body_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/raw")
    assert response.status_code == 200
    assert response.json() == {"length": 0}


@pytest.fixture
async def app_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(make_settings(database_url=database_url)) as client:
        yield client


async def inbox_size(sessions: SessionFactory) -> int:
    async with sessions() as session:
        return await session.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0


def oversized_webhook() -> bytes:
    """A real envelope, padded past the limit with a long message text."""
    padding = "x" * MAX_BODY_BYTES
    return httpx.Request(
        "POST", "http://test", json=envelope(messages=[text_message("254712345678", padding)])
    ).content


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
async def test_an_oversized_whatsapp_webhook_is_refused_and_nothing_is_stored(
    app_client: httpx.AsyncClient, sessions: SessionFactory, declared: bool
) -> None:
    body = oversized_webhook()
    content = body if declared else chunked(body, 64 * 1024)

    response = await app_client.post(PATH, content=content, headers=SECRET_HEADERS)

    assert_too_large(response)
    assert await inbox_size(sessions) == 0


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
async def test_an_oversized_stk_callback_is_refused_and_nothing_is_stored(
    app_client: httpx.AsyncClient, sessions: SessionFactory, declared: bool
) -> None:
    body = b'{"Body": "' + b"x" * MAX_BODY_BYTES + b'"}'
    content = body if declared else chunked(body, 64 * 1024)
    secret = make_settings().mpesa_callback_secret.get_secret_value()

    response = await app_client.post(f"/payments/stk/callback/{secret}", content=content)

    assert_too_large(response)
    assert await inbox_size(sessions) == 0
