"""The WhatsApp webhook: Meta's handshake, and inbound messages and statuses from 360dialog.

Each event goes into the inbox first (messages by wamid, statuses by id and status), then is
handled in the same request: database work only, replies become outbox rows, so the answer
never waits on a provider. A handler that fails leaves the event stored and queued for retry;
the webhook still answers 200, because 360dialog would otherwise re-send the whole batch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.conversations import service as conversation_service
from invoiceiq.deps import SessionDep, SettingsDep
from invoiceiq.errors import AppError, Forbidden, Unauthorized
from invoiceiq.inbox import service as inbox
from invoiceiq.notifications import delivery
from invoiceiq.outbox import service as outbox
from invoiceiq.whatsapp import adapter
from invoiceiq.whatsapp.schemas import (
    InboundMessage,
    StatusUpdate,
    WebhookEnvelope,
    inbound_events,
    system_errors,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["whatsapp"], include_in_schema=False)

INBOUND_TOPIC = "whatsapp.inbound"
STATUS_TOPIC = "whatsapp.status"
SOURCE_MESSAGE = "whatsapp"
SOURCE_STATUS = "whatsapp-status"
MAX_STATUS_CHARS = 32


@router.get("/whatsapp/webhook")
async def verify_subscription(
    settings: SettingsDep,
    mode: str | None = Query(default=None, alias="hub.mode"),
    token: str | None = Query(default=None, alias="hub.verify_token"),
    challenge: str | None = Query(default=None, alias="hub.challenge"),
) -> PlainTextResponse:
    """Meta's handshake: echo the challenge when the verify token matches."""
    expected = settings.whatsapp_verify_token.get_secret_value()
    if mode != "subscribe" or token is None or not _same(token, expected) or challenge is None:
        raise Forbidden("Verification failed.")
    return PlainTextResponse(challenge)


@router.post("/whatsapp/webhook")
async def receive(request: Request, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    body = await request.body()
    _authenticate(request, body, settings)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python parses
        log.warning("whatsapp webhook: malformed JSON", extra={"bytes": len(body)})
        raise AppError("The body is not valid JSON.", code="malformed_json") from None
    try:
        envelope = WebhookEnvelope.model_validate(document)
    except ValidationError:
        log.warning("whatsapp webhook: not a Cloud API envelope; ignored")
        return JSONResponse({"status": "ignored"})
    messages, statuses = inbound_events(envelope)
    problems = [e.code for e in system_errors(envelope)]
    if problems:  # about the number itself (e.g. its quality or its account), not one message
        log.warning("whatsapp webhook: errors reported for the number", extra={"codes": problems})
    if not messages and not statuses:
        log.info("whatsapp webhook: nothing we handle in this envelope")
    for message in messages:
        await _receive_message(session, settings, message)
    for update in statuses:
        await _receive_status(session, settings, update)
    return JSONResponse({"status": "ok"})


async def _receive_message(
    session: AsyncSession, settings: Settings, message: InboundMessage
) -> None:
    """Store by wamid, then handle; a sender without a phone number is stored only."""
    if not adapter.is_storable_id(message.wamid):
        log.warning("whatsapp webhook: a message id WhatsApp never issues; ignored")
        return
    incoming = adapter.to_incoming(message)
    payload = adapter.incoming_to_json(incoming) if incoming else {"wamid": message.wamid}
    if await inbox.record(session, SOURCE_MESSAGE, message.wamid, payload) and incoming:
        await _handle_or_queue(session, settings, INBOUND_TOPIC, payload)


async def _receive_status(session: AsyncSession, settings: Settings, update: StatusUpdate) -> None:
    """Store by (id, status): a repeat is dropped, a new status of the same message is not."""
    status_ok = adapter.is_storable_id(update.status) and len(update.status) <= MAX_STATUS_CHARS
    if not (adapter.is_storable_id(update.message_id) and status_ok):
        log.warning("whatsapp webhook: status with an id or name we never issue; ignored")
        return
    key = f"{update.message_id}:{update.status}"
    payload = adapter.status_to_json(update)
    if await inbox.record(session, SOURCE_STATUS, key, payload):
        await _handle_or_queue(session, settings, STATUS_TOPIC, payload)


async def _handle_or_queue(
    session: AsyncSession, settings: Settings, topic: str, payload: dict[str, Any]
) -> None:
    """Handle now inside a savepoint; on failure keep the event and let the worker retry it."""
    try:
        async with session.begin_nested():
            handled = await handle_event(session, settings, topic, payload)
    except Exception:
        log.exception("whatsapp event failed; queued for retry", extra={"topic": topic})
        handled = False
    if not handled:
        await outbox.enqueue(session, topic, payload, not_before=None)


async def handle_event(
    session: AsyncSession, settings: Settings, topic: str, payload: dict[str, Any]
) -> bool:
    """Apply one stored event; False when it cannot be applied yet (retry later).

    A message is marked processed with its effects, so a worker that runs it again (its row
    re-claimed after a crash) does not answer it twice; statuses are idempotent as they are.
    """
    if topic == INBOUND_TOPIC:
        event = await inbox.get(session, SOURCE_MESSAGE, payload["wamid"])
        if event is not None and event.processed_at is not None:
            return True
        await conversation_service.handle_message(
            session, settings, adapter.incoming_from_json(payload)
        )
        if event is not None:
            await inbox.mark_processed(session, event)
        return True
    return await delivery.apply_status(
        session,
        settings,
        provider_id=payload["message_id"],
        status=payload["status"],
        at=datetime.fromisoformat(payload["at"]),
        error_code=payload.get("error_code"),
    )


def _authenticate(request: Request, body: bytes, settings: Settings) -> None:
    secret = request.headers.get("x-webhook-secret")
    if secret is None:
        raise Unauthorized("The webhook secret header is missing.")
    if not _same(secret, settings.whatsapp_webhook_secret.get_secret_value()):
        raise Forbidden("The webhook secret is wrong.")
    if settings.whatsapp_app_secret is not None:
        # Meta signs the raw body: https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads
        key = settings.whatsapp_app_secret.get_secret_value().encode()
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-hub-signature-256", "")
        if not _same(given, expected):
            raise Forbidden("The payload signature is wrong.")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
