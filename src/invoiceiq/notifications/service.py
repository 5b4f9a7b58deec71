"""Every outbound message goes through here: logged first, then sent by the worker.

Inside the recipient's 24-hour window the free-form message is sent; outside it, the matching
approved template (WhatsApp refuses free-form there with 131047). The choice is made when the
worker sends, so it uses the freshest window.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.kit.clock import utcnow
from invoiceiq.notifications import repository
from invoiceiq.notifications.models import DeliveryStatus, Direction, MessageLog
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.outbox import service as outbox

SEND_TOPIC = "whatsapp.send"


def ordering_key(phone: str) -> str:
    """One recipient's messages go out one at a time, in order (the outbox keeps it)."""
    return f"wa:{phone}"


async def log_inbound(session: AsyncSession, *, phone: str, kind: str, wamid: str) -> None:
    """Every inbound message is logged; the newest one opens the sender's 24-hour window."""
    await repository.add_inbound(session, phone=phone, kind=kind, provider_message_id=wamid)


async def last_sent_at(
    session: AsyncSession, *, invoice_id: uuid.UUID, kind: str
) -> datetime | None:
    """When a message of `kind` about this invoice was last queued (for rate-limited nudges)."""
    return await repository.last_sent_at(session, invoice_id=invoice_id, kind=kind)


INVOICE_MESSAGE_KINDS = ("invoice", "reminder")


async def invoice_delivery(session: AsyncSession, invoice_id: uuid.UUID) -> MessageLog | None:
    """The newest invoice or reminder message sent to the invoice's customer, if any."""
    return await repository.latest_invoice_delivery(session, invoice_id, INVOICE_MESSAGE_KINDS)


async def last_delivery_failed(session: AsyncSession, invoice_id: uuid.UUID) -> bool:
    latest = await invoice_delivery(session, invoice_id)
    return latest is not None and latest.status is DeliveryStatus.FAILED


def in_window(last_inbound_at: datetime | None, *, window_seconds: float) -> bool:
    """Whether a customer who last wrote at `last_inbound_at` may get free-form messages."""
    return last_inbound_at is not None and utcnow() - last_inbound_at < timedelta(
        seconds=window_seconds
    )


async def send(
    session: AsyncSession,
    *,
    to: str,
    message: Outbound,
    invoice_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Log the message (the row exists before the send) and enqueue its send; its log id."""
    log = await repository.add(
        session,
        direction=Direction.OUTBOUND,
        kind=message.kind,
        phone=to,
        status=DeliveryStatus.QUEUED,
        invoice_id=invoice_id,
        request=message.to_json(),
    )
    await outbox.enqueue(
        session,
        SEND_TOPIC,
        {"message_log_id": str(log.id)},
        f"send:{log.id}",
        ordering_key=ordering_key(to),
    )
    return log.id
