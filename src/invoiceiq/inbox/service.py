"""Store each inbound provider event once, before it is handled."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.inbox import repository
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.kit.clock import utcnow


async def record(
    session: AsyncSession, source: str, external_id: str, payload: dict[str, Any]
) -> bool:
    """Insert the event in the caller's transaction; True when it is new, False for a duplicate."""
    return await repository.insert_event(
        session, source=source, external_id=external_id, payload=payload
    )


async def unprocessed(session: AsyncSession, source: str, prefix: str) -> list[InboxEvent]:
    """Stored events of `source` whose id starts with `prefix` and that no handler applied yet."""
    return await repository.unprocessed_with_prefix(session, source=source, prefix=prefix)


async def get(session: AsyncSession, source: str, external_id: str) -> InboxEvent | None:
    return await repository.get_event(session, source=source, external_id=external_id)


async def get_by_id(session: AsyncSession, event_id: uuid.UUID) -> InboxEvent | None:
    return await repository.get_by_id(session, event_id)


async def of_source(
    session: AsyncSession, source: str, *, include_processed: bool = False
) -> list[InboxEvent]:
    """Stored events of `source`, oldest first: those no one has dealt with yet, or all."""
    return await repository.list_source(session, source=source, include_processed=include_processed)


async def mark_processed(
    session: AsyncSession, event: InboxEvent, error: str | None = None
) -> None:
    await repository.mark_processed(session, event.id, at=utcnow(), error=error)


async def take_unprocessed(session: AsyncSession, source: str, external_id: str) -> bool | None:
    """Mark the event processed in the caller's transaction, with the effects of handling it,
    unless it was already: True when marked now, False when it was processed before (handle it
    no more), None when it was never stored."""
    return await repository.take_unprocessed(
        session, source=source, external_id=external_id, at=utcnow()
    )
