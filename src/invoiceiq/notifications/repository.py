"""Message log SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.notifications.models import DeliveryStatus, Direction, MessageLog

# Delivery statuses only move forward: a late "delivered" never replaces "read". `failed` is
# the other way out of queued/sent, and final; once a message reached the phone (delivered,
# read) a contradicting `failed` is not believed, so nobody is told of a failure that wasn't.
BEHIND = {
    DeliveryStatus.QUEUED: (),
    DeliveryStatus.SENT: (DeliveryStatus.QUEUED,),
    DeliveryStatus.DELIVERED: (DeliveryStatus.QUEUED, DeliveryStatus.SENT),
    DeliveryStatus.READ: (DeliveryStatus.QUEUED, DeliveryStatus.SENT, DeliveryStatus.DELIVERED),
    DeliveryStatus.FAILED: (DeliveryStatus.QUEUED, DeliveryStatus.SENT),
}


async def add(session: AsyncSession, **values: Any) -> MessageLog:
    row = MessageLog(**values)
    session.add(row)
    await session.flush()
    return row


async def add_inbound(
    session: AsyncSession, *, phone: str, kind: str, provider_message_id: str
) -> None:
    await session.execute(
        sa.insert(MessageLog).values(
            direction=Direction.INBOUND,
            kind=kind,
            phone=phone,
            provider_message_id=provider_message_id,
            status=DeliveryStatus.READ,
        )
    )


async def get(session: AsyncSession, log_id: uuid.UUID) -> MessageLog | None:
    return await session.get(MessageLog, log_id)


async def get_by_provider_id(session: AsyncSession, provider_id: str) -> MessageLog | None:
    return await session.scalar(
        sa.select(MessageLog).where(MessageLog.provider_message_id == provider_id)
    )


async def record_sent(
    session: AsyncSession,
    log_id: uuid.UUID,
    *,
    provider_id: str,
    template_name: str | None,
    at: datetime,
) -> None:
    """The provider took the message. A send that had failed before the provider ever took
    it (an operator's `outbox retry` of its dead row) starts over as this accepted one."""
    await session.execute(
        sa.update(MessageLog)
        .where(
            MessageLog.id == log_id,
            MessageLog.status == DeliveryStatus.FAILED,
            MessageLog.provider_message_id.is_(None),
        )
        .values(status=DeliveryStatus.QUEUED, error_code=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        sa.update(MessageLog)
        .where(MessageLog.id == log_id)
        .values(provider_message_id=provider_id, template_name=template_name, status_at=at)
        .execution_options(synchronize_session=False)
    )
    await advance_status(session, log_id, DeliveryStatus.SENT, at=at)


async def advance_status(
    session: AsyncSession,
    log_id: uuid.UUID,
    status: DeliveryStatus,
    *,
    at: datetime,
    error_code: str | None = None,
) -> bool:
    """Move the status forward only; True when it moved (so side effects happen once)."""
    behind = BEHIND[status]
    if not behind:
        return False
    values: dict[str, Any] = {"status": status, "status_at": at}
    if error_code is not None:
        values["error_code"] = error_code
    result = await session.execute(
        sa.update(MessageLog)
        .where(MessageLog.id == log_id, MessageLog.status.in_(behind))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def last_inbound_at(session: AsyncSession, phone: str) -> datetime | None:
    """When this phone last wrote to the business (the start of its 24-hour window)."""
    return await session.scalar(
        sa.select(sa.func.max(MessageLog.created_at)).where(
            MessageLog.phone == phone, MessageLog.direction == Direction.INBOUND
        )
    )


async def last_sent_at(
    session: AsyncSession, *, invoice_id: uuid.UUID, kind: str
) -> datetime | None:
    return await session.scalar(
        sa.select(sa.func.max(MessageLog.created_at)).where(
            MessageLog.invoice_id == invoice_id,
            MessageLog.kind == kind,
            MessageLog.direction == Direction.OUTBOUND,
        )
    )


async def latest_invoice_delivery(
    session: AsyncSession, invoice_id: uuid.UUID, kinds: tuple[str, ...]
) -> MessageLog | None:
    """The newest message of `kinds` about this invoice sent to its customer."""
    return await session.scalar(
        sa.select(MessageLog)
        .where(
            MessageLog.invoice_id == invoice_id,
            MessageLog.kind.in_(kinds),
            MessageLog.direction == Direction.OUTBOUND,
        )
        .order_by(MessageLog.created_at.desc(), MessageLog.id.desc())
        .limit(1)
    )
