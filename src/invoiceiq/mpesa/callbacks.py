"""The STK callback endpoint: `POST /payments/stk/callback/{secret}`.

Daraja signs nothing, so the path secret keeps strangers out, the body is a claim to check, and
an STK Query confirms a success before anything is marked paid (reference/daraja-mpesa.md §3.5).
Each callback is stored in the inbox by (CheckoutRequestID, ResultCode) before it is applied, so
a success is never dropped as a duplicate of an earlier failure of the same push.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.uow import unit_of_work
from invoiceiq.deps import SessionDep, SettingsDep, get_session_factory
from invoiceiq.errors import AppError, NotFound
from invoiceiq.inbox import service as inbox
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.net import in_networks, networks
from invoiceiq.kit.text import json_is_storable, storable
from invoiceiq.mpesa.schemas import CallbackError, StkCallback, parse_callback
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import review, settlement
from invoiceiq.payments import service as payment_service

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
SOURCE = "mpesa"
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
# Column sizes of the payment table; real values are far shorter (ws_CO_… ids are ~30).
ID_MAX, CODE_MAX, RECEIPT_MAX = 64, 32, 32
# Far above M-PESA's per-transaction limit (KES 150,000 to 250,000, reference §6).
AMOUNT_MAX = 10_000_000
RETRY_APPLY_AFTER = 5.0
OUTSIDE_KEY_SUFFIX = ":outside-allowlist"
# Of an unreadable callback, the first bytes kept for review (Daraja's are about 1 KB).
UNREADABLE_KEEP = 16_384
REASON_MAX = 200
# Bodies that carry nothing, such as the RUNBOOK's reachability probe: refused, not kept.
_PROBES = frozenset({b"", b"{}", b"[]", b"null"})


@router.post("/payments/stk/callback/{secret}")
async def stk_callback(
    secret: str, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    if not _secret_ok(secret, settings):
        raise NotFound()
    raw = await request.body()
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
        if not json_is_storable(body):  # no real callback holds NUL or broken unicode
            raise ValueError("unstorable text")
        callback = parse_callback(body)
        _check_sizes(callback)
    # RecursionError: deeply nested JSON; a malformed body is a 400, never a 500.
    except (ValueError, RecursionError, CallbackError) as error:
        await _keep_unreadable(request, raw, error)
        raise AppError("Not an STK callback.", code="malformed_callback") from None
    key = f"{callback.checkout_request_id}:{callback.result_code}"
    if not _from_allowed_address(request, settings):
        body = {**body, settlement.OUTSIDE_ALLOWLIST: True}
        # Its own key: stored first, it must not make Safaricom's own callback a "repeat"
        # (whose receipt number would then be lost).
        key += OUTSIDE_KEY_SUFFIX
    if not await inbox.record(session, SOURCE, key, body):
        return ACCEPTED  # a repeat of a callback already stored
    try:
        # A savepoint: should applying fail, the stored callback survives (Daraja does not
        # send it again) and a job applies it later.
        async with session.begin_nested():
            await _apply(session, settings, callback, body, key)
    except Exception:
        log.exception("stk callback stored but not applied; retried by a job")
        await _look_again(session, key, delay=RETRY_APPLY_AFTER)
    return ACCEPTED


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity: Python reads them, JSON (and PostgreSQL's jsonb) does not."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A number too large for a float (1e400) reads as infinity, which jsonb refuses."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number out of range")
    return value


async def _keep_unreadable(request: Request, raw: bytes, error: Exception) -> None:
    """A body behind the right path secret that we cannot read may still be Daraja's word that
    someone paid, and Daraja never sends it again: kept for `payments review`, in a transaction
    of its own (the request's rolls back with the 400), once per distinct body. An empty body
    or `{}` (a reachability probe, RUNBOOK) is not kept."""
    if raw.strip() in _PROBES:
        log.warning("stk callback: empty body refused")
        return
    text = storable(raw[:UNREADABLE_KEEP].decode("utf-8", "replace")) or ""
    reason = "not JSON" if isinstance(error, json.JSONDecodeError) else str(error)[:REASON_MAX]
    reason = storable(reason) or ""  # a key named in the error may hold NUL
    payload = {"body": text, "bytes": len(raw), "reason": reason}
    digest = hashlib.sha256(raw).hexdigest()
    try:
        async with unit_of_work(get_session_factory(request)) as session:
            kept = await inbox.record(session, review.UNREADABLE_CALLBACKS, digest, payload)
    except Exception:
        log.exception("stk callback: unreadable body refused, and keeping it failed")
        return
    log.warning("stk callback: unreadable body refused, kept for review", extra={"new": kept})


async def _apply(
    session: AsyncSession,
    settings: Settings,
    callback: StkCallback,
    body: dict[str, Any],
    key: str,
) -> None:
    applied = await settlement.apply_callback(session, settings, callback, body)
    if not applied and callback.succeeded:
        matched = await settlement.match_orphan_success(session, settings, callback)
        if matched is not None:
            applied = await settlement.apply_callback(session, settings, callback, body)
    event = await inbox.get(session, SOURCE, key)
    if applied and event is not None:
        await inbox.mark_processed(session, event)
        return
    # Unknown id: its push's answer may still be on its way (the push handler applies it then);
    # looked at again later, and kept for review if it still matches nothing.
    await _look_again(session, key, delay=settings.reconcile_after)


async def _look_again(session: AsyncSession, key: str, *, delay: float) -> None:
    await outbox.enqueue(
        session,
        payment_service.ORPHAN_TOPIC,
        {"external_id": key},
        f"orphan:{key}",
        not_before=utcnow() + timedelta(seconds=delay),
    )


def _check_sizes(callback: StkCallback) -> None:
    """Values larger than any M-PESA sends (and than the columns that keep them) mark a body
    that is not Daraja's: refused whole, rather than failing halfway through applying it.

    PhoneNumber is not checked: production callbacks may mask or hash it (reference §9), and
    refusing a real success for that would lose its receipt number.
    """
    limits = (
        (callback.checkout_request_id, ID_MAX),
        (callback.merchant_request_id or "", ID_MAX),
        (callback.result_code, CODE_MAX),
        (callback.receipt_number or "", RECEIPT_MAX),
    )
    if any(len(value) > limit for value, limit in limits):
        raise CallbackError("a callback value is longer than M-PESA's")
    if callback.amount is not None and callback.amount > AMOUNT_MAX:
        raise CallbackError("Amount is larger than any M-PESA payment")


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
    allowed = in_networks(client, networks(tuple(settings.mpesa_callback_allowlist)))
    if not allowed:
        log.warning("stk callback from an address outside the allowlist")
    return allowed
