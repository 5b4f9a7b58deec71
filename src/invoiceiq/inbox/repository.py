"""Inbox SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.upsert import insert_if_absent
from invoiceiq.inbox.models import InboxEvent


async def insert_event(
    session: AsyncSession, *, source: str, external_id: str, payload: dict[str, Any]
) -> bool:
    return await insert_if_absent(
        session,
        InboxEvent,
        {"source": source, "external_id": external_id, "payload": payload},
        conflict_on=["source", "external_id"],
    )


async def get_event(session: AsyncSession, *, source: str, external_id: str) -> InboxEvent | None:
    return await session.scalar(
        sa.select(InboxEvent).where(
            InboxEvent.source == source, InboxEvent.external_id == external_id
        )
    )


async def mark_processed(
    session: AsyncSession, event_id: uuid.UUID, *, at: datetime, error: str | None = None
) -> None:
    await session.execute(
        sa.update(InboxEvent).where(InboxEvent.id == event_id).values(processed_at=at, error=error)
    )


async def unprocessed_with_prefix(
    session: AsyncSession, *, source: str, prefix: str
) -> list[InboxEvent]:
    return list(
        await session.scalars(
            sa.select(InboxEvent)
            .where(
                InboxEvent.source == source,
                InboxEvent.external_id.startswith(prefix, autoescape=True),
                InboxEvent.processed_at.is_(None),
            )
            .order_by(InboxEvent.received_at)
        )
    )
