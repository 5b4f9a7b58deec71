"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import hmac
import logging

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from invoiceiq.db.migrate import is_at_head
from invoiceiq.db.uow import unit_of_work
from invoiceiq.deps import SettingsDep, get_session_factory
from invoiceiq.errors import Unauthorized
from invoiceiq.ops import metrics
from invoiceiq.outbox import repository as outbox_repository

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = {"database": "ok", "migrations": "ok"}
    try:
        async with get_session_factory(request)() as session:
            await session.execute(sa.text("SELECT 1"))
        if not await is_at_head(request.app.state.engine):
            checks["migrations"] = "behind"
    except Exception:
        log.warning("readiness check failed", exc_info=True)
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    token = settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("A valid metrics token is required.")
    async with unit_of_work(get_session_factory(request)) as session:
        counts = await outbox_repository.count_by_status(session)
    for status, count in counts.items():
        metrics.OUTBOX_ROWS.labels(status=status.value).set(count)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
