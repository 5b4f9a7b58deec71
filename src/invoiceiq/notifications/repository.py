"""Message log SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.invoices.models import Invoice
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


@dataclass(frozen=True)
class Accepted:
    """What the caller of `record_sent` needs to know of the message it recorded."""

    kind: str
    invoice_id: uuid.UUID | None


_LOG: sa.Table = MessageLog.__table__  # type: ignore[assignment]


def _record_sent_statement() -> sa.Update:
    c = _LOG.c
    restarted = sa.and_(c.status == DeliveryStatus.FAILED, c.provider_message_id.is_(None))
    moves = sa.or_(restarted, c.status.in_(BEHIND[DeliveryStatus.SENT]))
    return (
        sa.update(_LOG)
        .where(c.id == sa.bindparam("log_id"))
        .values(
            provider_message_id=sa.bindparam("provider_id"),
            template_name=sa.bindparam("template"),
            status_at=sa.bindparam("at"),
            error_code=sa.case((restarted, sa.null()), else_=c.error_code),
            status=sa.case((moves, sa.literal(DeliveryStatus.SENT, c.status.type)), else_=c.status),
        )
        .returning(c.kind, c.invoice_id)
    )


# Built once: it runs for every message sent, on the worker's busiest path.
_RECORD_SENT = _record_sent_statement()


async def record_sent(
    session: AsyncSession,
    log_id: uuid.UUID,
    *,
    provider_id: str,
    template_name: str | None,
    at: datetime,
) -> Accepted | None:
    """The provider took the message: its id is recorded, and the status moves to sent
    (forward only). A send that had failed before the provider ever took it (an operator's
    `outbox retry` of its dead row) starts over as this accepted one, its error cleared.

    One statement (on the busiest path of the worker): each CASE reads the row as it was.
    None when there is no such message.
    """
    result = await session.execute(
        _RECORD_SENT,
        {"log_id": log_id, "provider_id": provider_id, "template": template_name, "at": at},
    )
    row = result.first()
    return None if row is None else Accepted(row.kind, row.invoice_id)


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


@dataclass(frozen=True)
class ToSend:
    """A logged message as the sender needs it, with when its recipient last wrote to us."""

    phone: str
    request: dict[str, Any] | None
    provider_message_id: str | None
    last_inbound_at: datetime | None
    # The status of the invoice the message is about (None: about none).
    invoice_status: str | None = None


def _to_send_statement() -> sa.Select[Any]:
    c = _LOG.c
    inbound = _LOG.alias("inbound")
    last_inbound = (
        sa.select(sa.func.max(inbound.c.created_at))
        .where(inbound.c.phone == c.phone, inbound.c.direction == Direction.INBOUND)
        .scalar_subquery()
    )
    invoice_status = sa.select(Invoice.status).where(Invoice.id == c.invoice_id).scalar_subquery()
    return sa.select(c.phone, c.request, c.provider_message_id, last_inbound, invoice_status).where(
        c.id == sa.bindparam("log_id")
    )


# Built once (one per send, on the worker's busiest path): SQLAlchemy caches its compiled form.
_TO_SEND = _to_send_statement()


async def to_send(session: AsyncSession, log_id: uuid.UUID) -> ToSend | None:
    """The message and its recipient's last inbound time, in one statement; None if absent."""
    row = (await session.execute(_TO_SEND, {"log_id": log_id})).first()
    return None if row is None else ToSend(*row)


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


# Forward statuses by rank; a message's status only moves to a higher one (BEHIND above).
RANK = {
    DeliveryStatus.QUEUED: 0,
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.READ: 3,
}


@dataclass(frozen=True)
class StatusMove:
    provider_id: str
    status: DeliveryStatus  # sent, delivered or read
    at: datetime


# PostgreSQL: a batch of statuses in one statement. The highest status per message wins (a
# message's "sent" and "read" can arrive together); a failed message stays failed.
_ADVANCE_MANY_PG = sa.text(
    """
    WITH moves AS (
        SELECT DISTINCT ON (provider_id) provider_id, status, at, rank
        FROM unnest(
                CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:ats AS timestamptz[]),
                CAST(:ranks AS int[])
            )
            AS given(provider_id, status, at, rank)
        ORDER BY provider_id, rank DESC, at DESC
    ),
    known AS (
        SELECT message_log.id, moves.provider_id, moves.status, moves.at, moves.rank
        FROM moves JOIN message_log ON message_log.provider_message_id = moves.provider_id
    ),
    moved AS (
        UPDATE message_log
        SET status = known.status, status_at = known.at, updated_at = :now
        FROM known
        WHERE message_log.id = known.id
          AND CASE message_log.status
                WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2
                WHEN 'read' THEN 3 ELSE 99
              END < known.rank
        RETURNING 1
    )
    SELECT provider_id FROM known
    """
)


async def advance_many(
    session: AsyncSession, moves: list[StatusMove], *, now: datetime
) -> set[str]:
    """Move each message forward to its status (only forward); the provider ids we know.

    A status for an id we have not recorded yet is left out of the result: its send's answer
    is still on its way, and the caller tries it again later.
    """
    if not moves:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(
            _ADVANCE_MANY_PG,
            {
                "ids": [m.provider_id for m in moves],
                "statuses": [m.status.value for m in moves],
                "ats": [m.at for m in moves],
                "ranks": [RANK[m.status] for m in moves],
                "now": now,
            },
        )
        return {str(row.provider_id) for row in result}
    known: set[str] = set()
    for move in sorted(moves, key=lambda m: RANK[m.status]):
        entry = await get_by_provider_id(session, move.provider_id)
        if entry is not None:
            known.add(move.provider_id)
            await advance_status(session, entry.id, move.status, at=move.at)
    return known
