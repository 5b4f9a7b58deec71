"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
import hmac
import logging

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from invoiceiq.db.migrate import migration_state
from invoiceiq.db.uow import unit_of_work
from invoiceiq.deps import SettingsDep, get_session_factory
from invoiceiq.error_handlers import new_error_id
from invoiceiq.errors import Unauthorized, error_body
from invoiceiq.ops import metrics
from invoiceiq.outbox import repository as outbox_repository

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

# A probe that hangs is as bad as one that fails: answer 503 before the balancer times out.
READINESS_TIMEOUT = 5.0
# A scrape still answers (request metrics) when the database is slow; outbox gauges then vanish.
OUTBOX_COUNT_TIMEOUT = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = {"database": "ok", "migrations": "ok"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with get_session_factory(request)() as session:
                await session.execute(sa.text("SELECT 1"))
            state = await migration_state(request.app.state.engine)
            # Ahead: a deploy migrated first and this machine, on the old code, is about to be
            # replaced; migrations keep the old code working, so it stays in rotation.
            checks["migrations"] = "ok" if state == "current" else state
    except Exception:
        log.warning("readiness check failed: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    if checks["database"] == "ok" and checks["migrations"] in ("ok", "ahead"):
        return JSONResponse({"ready": True, "checks": checks})
    # The error shape of DESIGN §3, plus the checks a person needs to see what is wrong.
    body = error_body("not_ready", _not_ready_message(checks), new_error_id())
    return JSONResponse({**body, "ready": False, "checks": checks}, status_code=503)


def _not_ready_message(checks: dict[str, str]) -> str:
    if checks["database"] != "ok":
        return "The database is unreachable."
    return "The database is not migrated to the latest revision; run `invoiceiq db upgrade`."


@router.get("/metrics")
async def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    token = settings.metrics_token
    if token is not None:
        # The scheme's case does not matter (RFC 9110 §11.1), the token's does.
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise Unauthorized("A valid metrics token is required.")
    await _refresh_outbox_gauges(request)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _refresh_outbox_gauges(request: Request) -> None:
    try:
        async with asyncio.timeout(OUTBOX_COUNT_TIMEOUT):
            async with unit_of_work(get_session_factory(request)) as session:
                counts = await outbox_repository.count_by_status(session)
    except Exception:
        log.warning("outbox rows not counted: database unreachable", exc_info=True)
        # No series beats a stale one: an alert on absent() then fires.
        metrics.OUTBOX_ROWS.clear()
        return
    for status, count in counts.items():
        metrics.OUTBOX_ROWS.labels(status=status.value).set(count)
