"""Inbox SQL."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.upsert import insert_if_absent
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.outbox import repository as outbox
from invoiceiq.outbox.states import OutboxStatus


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


async def get_by_id(session: AsyncSession, event_id: uuid.UUID) -> InboxEvent | None:
    return await session.get(InboxEvent, event_id)


async def list_source(
    session: AsyncSession, *, source: str, include_processed: bool
) -> list[InboxEvent]:
    """The events of `source`, oldest first; only those not processed yet unless asked."""
    query = (
        sa.select(InboxEvent).where(InboxEvent.source == source).order_by(InboxEvent.received_at)
    )
    if not include_processed:
        query = query.where(InboxEvent.processed_at.is_(None))
    return list(await session.scalars(query))


_TABLE: sa.Table = InboxEvent.__table__  # type: ignore[assignment]


async def mark_processed(
    session: AsyncSession, event_id: uuid.UUID, *, at: datetime, error: str | None = None
) -> None:
    # Through the ORM: an InboxEvent loaded in this session sees its new processed_at.
    await session.execute(
        sa.update(InboxEvent).where(InboxEvent.id == event_id).values(processed_at=at, error=error)
    )


async def take_unprocessed(
    session: AsyncSession, *, source: str, external_id: str, at: datetime
) -> bool | None:
    """Mark the event processed at `at` unless it was already: True when this call marked it,
    False when it had been processed before, None when it is not stored.

    One statement on the usual path; the row stays locked until the caller's transaction ends.
    """
    c = _TABLE.c
    this = sa.and_(c.source == source, c.external_id == external_id)
    marked = await session.scalar(
        sa.update(_TABLE)
        .where(this, c.processed_at.is_(None))
        .values(processed_at=at)
        .returning(c.id)
    )
    if marked is not None:
        return True
    stored = await session.scalar(sa.select(c.id).where(this))
    return False if stored is not None else None


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


@dataclass(frozen=True)
class NewInboxRow:
    """An event to store; when it is new and `topic` is set, an outbox row of that topic (due
    at `received_at`, ordered by `ordering_key`) hands it to the worker."""

    source: str
    external_id: str
    payload: dict[str, Any]
    received_at: datetime
    topic: str | None = None
    ordering_key: str | None = None


# PostgreSQL: the whole batch, inbox and outbox rows, in one statement whatever its size (arrays,
# not rows). The outbox rows are those outbox.repository.insert_many writes elsewhere, for the
# events just stored; the payload is sent once for both. A statement is atomic on its own, and
# it runs in the caller's transaction.
_INSERT_NEW_PG = sa.text(
    """
    WITH incoming AS (
        SELECT * FROM unnest(
            CAST(:sources AS text[]), CAST(:external_ids AS text[]), CAST(:payloads AS text[]),
            CAST(:received AS timestamptz[]), CAST(:topics AS text[]),
            CAST(:ordering_keys AS text[])
        ) AS incoming(source, external_id, payload, received_at, topic, ordering_key)
    ),
    stored AS (
        INSERT INTO inbox_event (id, source, external_id, payload, received_at)
        SELECT gen_random_uuid(), source, external_id, CAST(payload AS jsonb), received_at
        FROM incoming
        ON CONFLICT (source, external_id) DO NOTHING
        RETURNING source, external_id, payload
    ),
    queued AS (
        INSERT INTO outbox_message
            (id, topic, payload, ordering_key, status, attempts, available_at, created_at,
             updated_at)
        SELECT gen_random_uuid(), incoming.topic, stored.payload, incoming.ordering_key,
               :pending, 0, incoming.received_at, incoming.received_at, incoming.received_at
        FROM stored JOIN incoming USING (source, external_id)
        WHERE incoming.topic IS NOT NULL
        RETURNING 1
    )
    SELECT source, external_id FROM stored
    """
)


async def insert_new(session: AsyncSession, rows: list[NewInboxRow]) -> set[tuple[str, str]]:
    """Insert the rows whose (source, external id) is not stored yet, each with its outbox row;
    the keys inserted.

    `rows` must not repeat a key.
    """
    if not rows:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(
            _INSERT_NEW_PG,
            {
                "sources": [r.source for r in rows],
                "external_ids": [r.external_id for r in rows],
                "payloads": [json.dumps(r.payload) for r in rows],
                "received": [r.received_at for r in rows],
                "topics": [r.topic for r in rows],
                "ordering_keys": [r.ordering_key for r in rows],
                "pending": OutboxStatus.PENDING.value,
            },
        )
        return {(str(row.source), str(row.external_id)) for row in result}
    result = await session.execute(
        sqlite.insert(_TABLE)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(_TABLE.c.source, _TABLE.c.external_id),
        [
            {
                "source": r.source,
                "external_id": r.external_id,
                "payload": r.payload,
                "received_at": r.received_at,
            }
            for r in rows
        ],
    )
    stored = {(str(row.source), str(row.external_id)) for row in result}
    queued = [
        outbox.NewOutboxRow(r.topic, r.payload, r.ordering_key, r.received_at)
        for r in rows
        if r.topic is not None and (r.source, r.external_id) in stored
    ]
    if queued:
        await outbox.insert_many(session, queued)
    return stored
