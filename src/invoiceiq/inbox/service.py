"""Store each inbound provider event once, before it is handled."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.inbox import repository


async def record(
    session: AsyncSession, source: str, external_id: str, payload: dict[str, Any]
) -> bool:
    """Insert the event in the caller's transaction; True when it is new, False for a duplicate."""
    return await repository.insert_event(
        session, source=source, external_id=external_id, payload=payload
    )
