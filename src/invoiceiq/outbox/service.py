"""Enqueue side effects in the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox import repository


async def enqueue(
    session: AsyncSession,
    topic: str,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    *,
    not_before: datetime | None = None,
    ordering_key: str | None = None,
) -> bool:
    """Add an outbox row in the caller's transaction; False when `dedupe_key` was already used.

    The commit of that transaction wakes the in-process worker (see db/engine.py).
    """
    added = await repository.insert(
        session,
        topic=topic,
        payload=payload,
        dedupe_key=dedupe_key,
        available_at=not_before or utcnow(),
        ordering_key=ordering_key,
    )
    if added:
        session.info["outbox_enqueued"] = True
    return added


def note_enqueued(session: AsyncSession) -> None:
    """Rows were added to the outbox in `session` by a repository of its own (the inbox's):
    its commit wakes the in-process worker as `enqueue` does."""
    session.info["outbox_enqueued"] = True


async def live_payload_values(
    session: AsyncSession, *, topics: Collection[str], field: str, values: Collection[str]
) -> set[str]:
    """Those of `values` that a row still to run (pending or running) of `topics` carries as
    `payload[field]`: the side effects about them still on their way."""
    return await repository.live_payload_values(session, topics=topics, field=field, values=values)
