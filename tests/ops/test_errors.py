"""Every error in the shape of DESIGN §3; stacks go to the log, never to the response."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import BaseModel, Field

from conftest import make_settings
from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.deps import SessionDep
from invoiceiq.errors import AppError, Conflict, NotFound
from invoiceiq.main import create_app
from invoiceiq.outbox.models import OutboxMessage
from support.apps import bearer, in_process

DESIGN_ERROR_KEYS = ("code", "message", "error_id", "fields")
SECRET_DETAIL = "provider said: token abc123 for 254712345678"


class PaymentRefused(AppError):
    code = "payment_refused"
    status_code = 402
    message = "That payment was refused."


class InvoiceIn(BaseModel):
    customer_phone: str
    amount: int = Field(ge=1)
    description: str


def add_test_routes(app: FastAPI) -> None:
    @app.get("/test/app-error")
    async def app_error() -> None:
        raise PaymentRefused()

    @app.get("/test/app-error-with-fields")
    async def app_error_with_fields() -> None:
        raise AppError("Check the amount.", code="bad_amount", fields={"amount": "too large"})

    @app.get("/test/not-found")
    async def not_found() -> None:
        raise NotFound("No such invoice.")

    @app.post("/test/invoices")
    async def create(body: InvoiceIn, limit: int = 10) -> dict[str, int]:
        return {"amount": body.amount, "limit": limit}

    @app.get("/test/crash")
    async def crash() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @app.post("/test/write-then-fail")
    async def write_then_fail(session: SessionDep, fail: bool = True) -> dict[str, bool]:
        session.add(OutboxMessage(topic="test.rollback", payload={}))
        await session.flush()
        if fail:
            raise Conflict("Already done.")
        return {"written": True}


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        # The server would log an escaped exception; here it must not reach the test either.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose routes here need no database (the file is never opened)."""
    app = create_app(
        make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"), run_worker=False
    )
    add_test_routes(app)
    async with serving(app) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert {"code", "message", "error_id"} <= set(error) <= {*DESIGN_ERROR_KEYS}
    assert isinstance(error["error_id"], str) and len(error["error_id"]) >= 8
    return error


async def test_an_app_error_has_its_status_code_and_message(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/app-error")
    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "payment_refused"
    assert error["message"] == "That payment was refused."
    assert "fields" not in error
    assert response.headers["x-request-id"]


async def test_an_app_error_may_carry_fields(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/app-error-with-fields")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_amount"
    assert error["fields"] == {"amount": "too large"}


async def test_not_found_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/test/not-found")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    assert error_of(response)["message"] == "No such invoice."


async def test_error_ids_differ(client: httpx.AsyncClient) -> None:
    first = error_of(await client.get("/test/app-error"))["error_id"]
    second = error_of(await client.get("/test/app-error"))["error_id"]
    assert first != second


async def test_validation_error_is_422_with_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/test/invoices?limit=many", json={"customer_phone": "0712345678", "amount": 0}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    fields = error["fields"]
    assert isinstance(fields, dict)
    assert set(fields) == {"amount", "description", "limit"}
    assert all(isinstance(message, str) and message for message in fields.values())
    # The message describes the rule, never echoes what was sent.
    assert "0712345678" not in response.text


async def test_malformed_json_is_422_in_the_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/test/invoices", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


async def test_unhandled_error_is_a_500_without_details(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.get("/test/crash")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    for leak in ("Traceback", "RuntimeError", "abc123", "254712345678", "crash", ".py"):
        assert leak not in response.text
    assert response.headers["x-request-id"]

    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(logged) == 1
    record = logged[0]
    assert record.levelno == logging.ERROR
    assert getattr(record, "error_id", None) == error["error_id"]
    assert record.exc_info is not None
    assert "Traceback" in caplog.text and "RuntimeError" in caplog.text
    assert "in crash" in caplog.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/test/invoices", {"amount": "many"}, 422),
        ("get", "/test/no-such-route", None, 404),
        ("delete", "/test/app-error", None, 405),
        ("get", "/test/app-error", None, 402),
    ],
)
async def test_every_error_id_people_see_is_in_the_log(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: object,
    status: int,
) -> None:
    """The RUNBOOK says to search the log for the id a person quotes: validation errors, 404s
    and 405s too, not only our own errors."""
    with caplog.at_level(logging.INFO, logger="invoiceiq.error_handlers"):
        response = await client.request(method, path, json=body)
    assert response.status_code == status
    error_id = error_of(response)["error_id"]
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert len(logged) == 1 and getattr(logged[0], "status", None) == status


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (None, "The request needs a JSON body."),
        ([], "The body must be a JSON object."),
        (1500, "The body must be a JSON object."),
        ("x", "The body must be a JSON object."),
    ],
)
async def test_a_missing_body_is_named_as_such(
    client: httpx.AsyncClient, body: object, said: str
) -> None:
    response = await client.post("/test/invoices", json=body)
    assert response.status_code == 422
    assert error_of(response)["fields"] == {"body": said}


@pytest.mark.parametrize("simulator", [True, False])
async def test_the_root_is_the_simulator_when_there_is_one(tmp_path: Path, simulator: bool) -> None:
    """`make run` prints the app's address; its root was a bare "Not found"."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
        simulator=simulator,
        mpesa_environment="simulator" if simulator else "sandbox",
    )
    async with serving(create_app(settings, run_worker=False)) as client:
        response = await client.get("/")
    if simulator:
        assert response.status_code == 307 and response.headers["location"] == "/simulator/"
    else:
        assert response.status_code == 404


async def test_an_unknown_route_is_404_in_the_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_a_wrong_method_is_405_in_the_shape(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def _count_rows(sessions: SessionFactory) -> int:
    async with sessions() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).where(OutboxMessage.topic == "test.rollback")
        )
    return int(count or 0)


async def test_the_request_session_rolls_back_on_an_app_error(
    settings: Settings, sessions: SessionFactory
) -> None:
    app = create_app(settings, run_worker=False)
    add_test_routes(app)
    async with serving(app) as client:
        failed = await client.post("/test/write-then-fail")
        assert failed.status_code == 409
        assert error_of(failed)["code"] == "conflict"
        assert await _count_rows(sessions) == 0
        done = await client.post("/test/write-then-fail?fail=false")
        assert done.status_code == 200
        assert await _count_rows(sessions) == 1


async def test_requests_while_the_database_is_unreachable_are_a_503_to_retry() -> None:
    """Unavailable for a while, not broken: clients and monitors retry a 503; a 500 pages."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    settings = make_settings(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    async with in_process(settings) as http:
        answer = await http.get("/api/v1/invoices", headers=bearer("iq_anything"))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"] == (
        "We can't reach our database just now. Please try again in a minute."
    )
