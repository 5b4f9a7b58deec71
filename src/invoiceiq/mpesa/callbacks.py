"""The STK callback endpoint: `POST /payments/stk/callback/{secret}`.

Daraja signs nothing, so the path secret keeps strangers out, the body is a claim to check, and
an STK Query confirms a success before anything is marked paid (reference/daraja-mpesa.md §3.5).
Each callback is stored in the inbox by (CheckoutRequestID, ResultCode) before it is applied, so
a success is never dropped as a duplicate of an earlier failure of the same push.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.deps import SessionDep, SettingsDep
from invoiceiq.errors import AppError, NotFound
from invoiceiq.inbox import service as inbox
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.schemas import CallbackError, StkCallback, parse_callback
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import service as payment_service
from invoiceiq.payments import settlement

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
SOURCE = "mpesa"
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@router.post("/payments/stk/callback/{secret}")
async def stk_callback(
    secret: str, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    if not _secret_ok(secret, settings):
        raise NotFound()
    try:
        body = json.loads(await request.body())
        callback = parse_callback(body)
    except (ValueError, CallbackError):
        log.warning("stk callback: malformed body refused")
        raise AppError("Not an STK callback.", code="malformed_callback") from None
    force_confirm = not _from_allowed_address(request, settings)
    key = f"{callback.checkout_request_id}:{callback.result_code}"
    if await inbox.record(session, SOURCE, key, body):
        await _apply(session, settings, callback, body, key, force_confirm=force_confirm)
    return ACCEPTED


async def _apply(
    session: AsyncSession,
    settings: Settings,
    callback: StkCallback,
    body: dict[str, Any],
    key: str,
    *,
    force_confirm: bool,
) -> None:
    applied = await settlement.apply_callback(
        session, settings, callback, body, force_confirm=force_confirm
    )
    if not applied and callback.succeeded:
        matched = await settlement.match_orphan_success(session, settings, callback)
        if matched is not None:
            applied = await settlement.apply_callback(
                session, settings, callback, body, force_confirm=force_confirm
            )
    event = await inbox.get(session, SOURCE, key)
    if applied and event is not None:
        await inbox.mark_processed(session, event)
        return
    # Unknown id: its push's answer may still be on its way (the push handler applies it then);
    # looked at again later, and kept for review if it still matches nothing.
    await outbox.enqueue(
        session,
        payment_service.ORPHAN_TOPIC,
        {"external_id": key},
        f"orphan:{key}",
        not_before=utcnow() + timedelta(seconds=settings.reconcile_after),
    )


def _secret_ok(given: str, settings: Settings) -> bool:
    secrets = [settings.mpesa_callback_secret, settings.mpesa_callback_secret_previous]
    return any(
        s is not None and hmac.compare_digest(given.encode(), s.get_secret_value().encode())
        for s in secrets
    )


def _from_allowed_address(request: Request, settings: Settings) -> bool:
    """With MPESA_CALLBACK_ALLOWLIST set, a callback from elsewhere is logged and its success is
    confirmed by query whatever MPESA_CONFIRM_CALLBACKS says."""
    if not settings.mpesa_callback_allowlist:
        return True
    client = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    allowed = any(
        address in ipaddress.ip_network(entry, strict=False)
        for entry in settings.mpesa_callback_allowlist
    )
    if not allowed:
        log.warning("stk callback from an address outside the allowlist")
    return allowed
