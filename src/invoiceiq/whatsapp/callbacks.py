"""The WhatsApp webhook: Meta's handshake, and inbound messages and statuses from 360dialog.

Each event goes into the inbox (messages by wamid, statuses by id and status) with an outbox row
that hands it to the worker, and the webhook answers 200 once they are committed: the answer
never waits on a handler or a provider. The worker applies each event (`handle_event`), one
sender's messages in the order they came; a handler that fails is retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.conversations import service as conversation_service
from invoiceiq.deps import SettingsDep
from invoiceiq.errors import AppError, Forbidden, Unauthorized
from invoiceiq.inbox import service as inbox
from invoiceiq.inbox.writer import InboxWriter, NewEvent
from invoiceiq.notifications import delivery
from invoiceiq.whatsapp import adapter
from invoiceiq.whatsapp.schemas import (
    InboundMessage,
    StatusUpdate,
    WebhookEnvelope,
    envelope_from_json,
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
_OK = b'{"status":"ok"}'  # the answer to nearly every webhook, encoded once


async def receive(request: Request) -> Response:
    """Store every event of the envelope (and queue its handling), then answer 200.

    The hot path of the service, so a plain Starlette route (registered below): no dependency
    solving nor response model; pydantic parses the bytes itself; concurrent webhooks share one
    transaction (inbox/writer.py).
    """
    settings: Settings = request.app.state.settings
    body = await request.body()
    _authenticate(request, body, settings)
    envelope = _parse(body)
    if envelope is None:
        log.warning("whatsapp webhook: not a Cloud API envelope; ignored")
        return JSONResponse({"status": "ignored"})
    messages, statuses = inbound_events(envelope)
    problems = [e.code for e in system_errors(envelope)]
    if problems:  # about the number itself (e.g. its quality or its account), not one message
        log.warning("whatsapp webhook: errors reported for the number", extra={"codes": problems})
    if not messages and not statuses:
        log.info("whatsapp webhook: nothing we handle in this envelope")
    events = [e for m in messages if (e := _message_event(m))]
    events += [e for u in statuses if (e := _status_event(u))]
    writer: InboxWriter = request.app.state.inbox_writer
    await writer.store(events)
    return Response(_OK, media_type="application/json")


# Registered first: routes are matched in order, and this is the busiest one. The app sends its
# requests past the router (ops/hot_routes.py); the router serves it behind a root path.
router.add_route("/whatsapp/webhook", receive, methods=["POST"], include_in_schema=False)


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


def _parse(body: bytes) -> WebhookEnvelope | None:
    """The envelope, or None when the JSON is not one; AppError when it is not JSON at all."""
    try:
        return envelope_from_json(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python parses
        log.warning("whatsapp webhook: malformed JSON", extra={"bytes": len(body)})
        raise AppError("The body is not valid JSON.", code="malformed_json") from None


def _message_event(message: InboundMessage) -> NewEvent | None:
    """Stored by wamid; handled in order per sender. A sender without a phone number is stored
    only (we can neither answer it by number nor match it to an invoice)."""
    if not adapter.is_storable_id(message.wamid):
        log.warning("whatsapp webhook: a message id WhatsApp never issues; ignored")
        return None
    incoming = adapter.to_incoming(message)
    if incoming is None:
        return NewEvent(SOURCE_MESSAGE, message.wamid, {"wamid": message.wamid})
    payload = adapter.incoming_to_json(incoming)
    return NewEvent(SOURCE_MESSAGE, message.wamid, payload, INBOUND_TOPIC, f"in:{incoming.phone}")


def _status_event(update: StatusUpdate) -> NewEvent | None:
    """Stored by (id, status): a repeat is dropped, a new status of the same message is not."""
    status_ok = adapter.is_storable_id(update.status) and len(update.status) <= MAX_STATUS_CHARS
    if not (adapter.is_storable_id(update.message_id) and status_ok):
        log.warning("whatsapp webhook: status with an id or name we never issue; ignored")
        return None
    key = f"{update.message_id}:{update.status}"
    return NewEvent(SOURCE_STATUS, key, adapter.status_to_json(update), STATUS_TOPIC)


async def handle_event(
    session: AsyncSession, settings: Settings, topic: str, payload: dict[str, Any]
) -> bool:
    """Apply one stored event; False when it cannot be applied yet (retry later).

    A message is marked processed with its effects, so a worker that runs it again (its row
    re-claimed after a crash) does not answer it twice; statuses are idempotent as they are.
    """
    if topic == INBOUND_TOPIC:
        if await inbox.take_unprocessed(session, SOURCE_MESSAGE, payload["wamid"]) is False:
            return True  # answered before, by a run of this row that committed
        await conversation_service.handle_message(
            session, settings, adapter.incoming_from_json(payload)
        )
        return True
    return await delivery.apply_status(
        session,
        settings,
        provider_id=payload["message_id"],
        status=payload["status"],
        at=datetime.fromisoformat(payload["at"]),
        error_code=payload.get("error_code"),
    )


async def apply_statuses_now(session: AsyncSession, events: list[NewEvent]) -> set[tuple[str, str]]:
    """Run by the inbox writer in the webhook's own transaction, for its events: delivery
    statuses that only move a known message forward (most of the webhooks there are, three per
    message) are applied right there, in one statement per batch, instead of each costing the
    worker a claim and a transaction. The (source, id) of the events applied; the rest (failed,
    a message not recorded yet, anything else) are queued for the worker as usual. A repeated
    status applies nothing: a message only moves forward."""
    statuses = [e for e in events if e.topic == STATUS_TOPIC]
    if not statuses:
        return set()
    moves = [
        (e.payload["message_id"], e.payload["status"], datetime.fromisoformat(e.payload["at"]))
        for e in statuses
    ]
    applied = await delivery.advance_many(session, moves)
    return {
        (e.source, e.external_id)
        for e in statuses
        if (e.payload["message_id"], e.payload["status"]) in applied
    }


def _authenticate(request: Request, body: bytes, settings: Settings) -> None:
    """360dialog sends our secret header. Meta, sending directly, cannot add headers of ours
    but signs the body with the app secret: with WHATSAPP_APP_SECRET set, that signature is
    checked on every post and suffices; a secret header, if one comes, must be right too."""
    secret = request.headers.get("x-webhook-secret")
    if secret is None and settings.whatsapp_app_secret is None:
        raise Unauthorized("The webhook secret header is missing.")
    if secret is not None and not _same(
        secret, settings.whatsapp_webhook_secret.get_secret_value()
    ):
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
