"""/healthz, /readyz and /metrics on both databases, driven through the app's own lifespan."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from conftest import create_postgres_database, drop_postgres_database, make_settings
from invoiceiq.config import Settings
from invoiceiq.db import migrate
from invoiceiq.db.engine import SessionFactory, make_engine
from invoiceiq.main import create_app
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.states import OutboxStatus


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (lifespan entered) and an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings, run_worker=False)) as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def unmigrated_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    """A reachable database with no tables at all."""
    if db_kind == "sqlite":
        path = tmp_path / "empty.db"
        path.touch()
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"invoiceiq_empty_{uuid.uuid4().hex[:8]}"
    url = create_postgres_database(name)
    yield url
    drop_postgres_database(name)


def assert_error_shape(body: dict[str, object], code: str) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["error_id"], str) and error["error_id"]


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "ok"}}


async def test_readyz_is_503_before_migrations(unmigrated_url: str) -> None:
    app = create_app(make_settings(database_url=unmigrated_url), run_worker=False)
    async with serving(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "migrations": "behind"}
    assert body["ready"] is False
    assert_error_shape(body, "not_ready")
    assert "invoiceiq db upgrade" in body["error"]["message"]


async def test_readyz_stays_ready_on_a_database_a_newer_release_migrated(
    settings: Settings, database_url: str
) -> None:
    """A deploy migrates first, then replaces the machines: until then, the old code answers
    on the newer schema, and must not be pulled out of rotation with advice to upgrade."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        app = create_app(settings, run_worker=False)
        async with serving(app) as client:
            response = await client.get("/readyz")
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :head"),
                {"head": migrate.head_revision()},
            )
        await engine.dispose()
    assert response.status_code == 200, response.text
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "ahead"}}


async def test_readyz_is_503_when_postgresql_is_unreachable() -> None:
    url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{closed_port()}/invoiceiq"
    app = create_app(make_settings(database_url=url), run_worker=False)
    async with serving(app) as client:
        response = await client.get("/readyz")
        health = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "unreachable", "migrations": "unknown"}
    assert_error_shape(body, "not_ready")
    assert "hunter2" not in response.text
    # Alive, though not ready: the balancer should not restart the process for this.
    assert health.status_code == 200


async def test_readyz_is_503_when_the_sqlite_file_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    app = create_app(make_settings(database_url=url), run_worker=False)
    async with serving(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"


async def _add_dead_outbox_row(sessions: SessionFactory) -> None:
    async with sessions() as session, session.begin():
        session.add(OutboxMessage(topic="test.dead", payload={}, status=OutboxStatus.DEAD))
        session.add(OutboxMessage(topic="test.pending", payload={}))


async def test_metrics_expose_requests_latency_and_outbox(
    client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    await _add_dead_outbox_row(sessions)
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'invoiceiq_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'invoiceiq_http_request_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in (
        text
    )
    assert 'invoiceiq_http_request_seconds_count{method="GET",route="/healthz"}' in text
    assert 'invoiceiq_outbox_rows{status="dead"} 1.0' in text
    assert 'invoiceiq_outbox_rows{status="pending"} 1.0' in text
    assert 'invoiceiq_outbox_rows{status="running"} 0.0' in text
    assert 'invoiceiq_outbox_rows{status="done"} 0.0' in text


async def test_metrics_answer_without_outbox_gauges_when_the_database_is_down() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/invoiceiq"
    app = create_app(make_settings(database_url=url), run_worker=False)
    async with serving(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "invoiceiq_http_requests_total" in response.text
    assert "invoiceiq_outbox_rows{" not in response.text


@pytest.fixture
async def guarded_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url=database_url, metrics_token="scrape-secret")
    async with serving(create_app(settings, run_worker=False)) as client:
        yield client


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "scrape-secret",
        "Bearer scrape-secret-and-more",
        "Basic scrape-secret",
        "Bearer Scrape-secret",
        "Bearer",
    ],
)
async def test_metrics_token_is_required_when_set(
    guarded_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await guarded_client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert_error_shape(response.json(), "unauthorized")
    assert "scrape-secret" not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_metrics_with_the_right_token(guarded_client: httpx.AsyncClient, scheme: str) -> None:
    response = await guarded_client.get(
        "/metrics", headers={"Authorization": f"{scheme} scrape-secret"}
    )
    assert response.status_code == 200
    assert "invoiceiq_outbox_rows" in response.text


async def test_health_endpoints_stay_open_with_a_metrics_token(
    guarded_client: httpx.AsyncClient,
) -> None:
    assert (await guarded_client.get("/healthz")).status_code == 200
    assert (await guarded_client.get("/readyz")).status_code == 200


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    first = (await client.get("/healthz")).headers["x-request-id"]
    second = (await client.get("/readyz")).headers["x-request-id"]
    assert first and second and first != second
    assert (await client.get("/nope")).headers["x-request-id"]


async def test_a_safe_incoming_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42_x"})
    assert response.headers["x-request-id"] == "lb-7f3a.42_x"


@pytest.mark.parametrize("unsafe", ["has spaces", "a" * 65, 'quote"d', "new\\line", "ü-id"])
async def test_an_unsafe_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, unsafe: str
) -> None:
    response = await client.get("/healthz", headers=[(b"X-Request-ID", unsafe.encode("utf-8"))])
    assert response.status_code == 200
    returned = response.headers["x-request-id"]
    assert returned != unsafe
    assert re.fullmatch(r"r[0-9a-f]{12}-[0-9a-f]+", returned)  # one of ours
