"""Outbox SQL: enqueue, claim with a lease, record outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.upsert import insert_if_absent
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.states import OutboxStatus

_M = OutboxMessage
_TABLE: sa.Table = OutboxMessage.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class ClaimedRow:
    id: uuid.UUID
    topic: str
    payload: dict[str, Any]
    attempts: int
    claim_token: str
    ordering_key: str | None = None


async def insert(
    session: AsyncSession,
    *,
    topic: str,
    payload: dict[str, Any],
    dedupe_key: str | None,
    available_at: datetime,
    ordering_key: str | None = None,
) -> bool:
    values = {
        "topic": topic,
        "payload": payload,
        "available_at": available_at,
        "ordering_key": ordering_key,
    }
    if dedupe_key is None:
        await session.execute(sa.insert(_M).values(**values))
        return True
    values["dedupe_key"] = dedupe_key
    return await insert_if_absent(session, _M, values, conflict_on=["dedupe_key"])


@dataclass(frozen=True)
class NewOutboxRow:
    topic: str
    payload: dict[str, Any]
    ordering_key: str | None
    at: datetime  # due, and created: rows sharing an ordering key run in this order


async def insert_many(session: AsyncSession, rows: list[NewOutboxRow]) -> None:
    """Add many rows (without dedupe keys) in one statement. On PostgreSQL the inbox writes its
    rows together with its own (inbox.repository.insert_new); this is the portable way."""
    await session.execute(
        sa.insert(_M),
        [
            {
                "topic": r.topic,
                "payload": r.payload,
                "ordering_key": r.ordering_key,
                "available_at": r.at,
                "created_at": r.at,
                "updated_at": r.at,
            }
            for r in rows
        ],
    )


@dataclass(frozen=True)
class BuriedRow:
    id: uuid.UUID
    topic: str
    payload: dict[str, Any]


async def bury_abandoned(
    session: AsyncSession, *, expired_before: datetime, max_attempts: int
) -> list[BuriedRow]:
    """Rows on their last allowed attempt whose lease ran out before `expired_before` (the
    worker died every time) made dead; the rows buried. `claim` leaves such rows alone.

    SKIP LOCKED, as in `claim`: concurrent workers each bury what they can lock instead of
    queueing behind (or deadlocking with) one another; a skipped row is buried next time.
    """
    abandoned = (
        sa.select(_M.id)
        .where(
            _M.status == OutboxStatus.RUNNING,
            _M.locked_until < expired_before,
            _M.attempts >= max_attempts,
        )
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        sa.update(_M)
        .where(_M.id.in_(abandoned.scalar_subquery()))
        .values(
            status=OutboxStatus.DEAD,
            claim_token=None,
            locked_until=None,
            last_error="lease expired on the last attempt (the worker stopped mid-handler)",
        )
        .returning(_M.id, _M.topic, _M.payload)
        .execution_options(synchronize_session=False)
    )
    return [BuriedRow(r.id, r.topic, r.payload) for r in result]


# The claim below as PostgreSQL runs it, written out: it runs many times a second, and building
# the statement with SQLAlchemy cost more CPU than PostgreSQL spent running it.
_CLAIM_PG = sa.text(
    """
    UPDATE outbox_message
    SET status = :running, attempts = attempts + 1, locked_until = :lease_until,
        claim_token = :token, updated_at = :now
    WHERE id IN (
        SELECT candidate.id FROM outbox_message AS candidate
        WHERE ((candidate.status = :pending AND candidate.available_at <= :now)
               OR (candidate.status = :running AND candidate.locked_until < :now
                   AND candidate.attempts < :max_attempts))
          AND (candidate.ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM outbox_message AS earlier
                WHERE earlier.ordering_key = candidate.ordering_key
                  AND earlier.status IN (:pending, :running)
                  AND (earlier.created_at < candidate.created_at
                       OR (earlier.created_at = candidate.created_at
                           AND earlier.id < candidate.id))
                  AND earlier.id <> candidate.id))
        ORDER BY candidate.available_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, topic, payload, attempts, ordering_key
    """
)


async def claim(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    token: str,
    max_attempts: int,
) -> list[ClaimedRow]:
    """Take up to `limit` due rows (or rows whose lease expired with attempts left: the others
    are for `bury_abandoned`) for this claim token.

    FOR UPDATE SKIP LOCKED (PostgreSQL) lets concurrent workers take disjoint rows without
    waiting; SQLite has one writer at a time, so the single UPDATE is already exclusive.
    """
    if session.get_bind().dialect.name == "postgresql":
        records = await session.execute(
            _CLAIM_PG,
            {
                "running": OutboxStatus.RUNNING.value,
                "lease_until": lease_until,
                "token": token,
                "now": now,
                "pending": OutboxStatus.PENDING.value,
                "limit": limit,
                "max_attempts": max_attempts,
            },
        )
        # SQLAlchemy's asyncpg dialect gives its connections a codec that decodes jsonb.
        return [
            ClaimedRow(uuid.UUID(str(r.id)), r.topic, r.payload, r.attempts, token, r.ordering_key)
            for r in records
        ]
    due = sa.or_(
        sa.and_(_M.status == OutboxStatus.PENDING, _M.available_at <= now),
        sa.and_(
            _M.status == OutboxStatus.RUNNING, _M.locked_until < now, _M.attempts < max_attempts
        ),
    )
    earlier = sa.orm.aliased(OutboxMessage)
    # Rows sharing an ordering key (one recipient's messages) run one at a time, oldest first.
    waits_for_earlier = (
        sa.select(earlier.id)
        .where(
            earlier.ordering_key == _M.ordering_key,
            earlier.status.in_((OutboxStatus.PENDING, OutboxStatus.RUNNING)),
            sa.or_(
                earlier.created_at < _M.created_at,
                sa.and_(earlier.created_at == _M.created_at, earlier.id < _M.id),
            ),
            earlier.id != _M.id,
        )
        .exists()
    )
    in_turn = sa.or_(_M.ordering_key.is_(None), sa.not_(waits_for_earlier))
    candidates = (
        sa.select(_M.id)
        .where(due, in_turn)
        .order_by(_M.available_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        sa.update(_M)
        .where(_M.id.in_(candidates.scalar_subquery()))
        .values(
            status=OutboxStatus.RUNNING,
            attempts=_M.attempts + 1,
            locked_until=lease_until,
            claim_token=token,
            updated_at=now,
        )
        .returning(_M.id, _M.topic, _M.payload, _M.attempts, _M.ordering_key)
        .execution_options(synchronize_session=False)
    )
    return [ClaimedRow(r.id, r.topic, r.payload, r.attempts, token, r.ordering_key) for r in result]


def _claimed_update(**values: Any) -> sa.Update:
    """An UPDATE of one claimed row, for its claimant only; on the table, not the mapped class
    (the ORM's bulk-update machinery cost more than the statement). Built once per outcome:
    these run several times per row on the worker's busiest path."""
    c = _TABLE.c
    return (
        sa.update(_TABLE)
        .where(
            c.id == sa.bindparam("row_id"),
            c.claim_token == sa.bindparam("row_token"),
            c.status == OutboxStatus.RUNNING,
        )
        .values(**values)
    )


_EXTEND_LEASE = _claimed_update(locked_until=sa.bindparam("until"))
_MARK_DONE = _claimed_update(
    status=OutboxStatus.DONE, done_at=sa.bindparam("now"), locked_until=None, claim_token=None
)
_RESCHEDULE = _claimed_update(
    status=OutboxStatus.PENDING,
    available_at=sa.bindparam("at"),
    last_error=sa.bindparam("error"),
    locked_until=None,
    claim_token=None,
)
_MARK_DEAD = _claimed_update(
    status=OutboxStatus.DEAD, last_error=sa.bindparam("error"), locked_until=None, claim_token=None
)


async def _update_claimed(
    session: AsyncSession, statement: sa.Update, row: ClaimedRow, **params: Any
) -> bool:
    result = await session.execute(
        statement, {"row_id": row.id, "row_token": row.claim_token, **params}
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def extend_lease(session: AsyncSession, row: ClaimedRow, *, until: datetime) -> bool:
    return await _update_claimed(session, _EXTEND_LEASE, row, until=until)


async def mark_done(session: AsyncSession, row: ClaimedRow, *, now: datetime) -> bool:
    return await _update_claimed(session, _MARK_DONE, row, now=now)


async def reschedule(
    session: AsyncSession, row: ClaimedRow, *, at: datetime, error: str | None
) -> bool:
    return await _update_claimed(session, _RESCHEDULE, row, at=at, error=error)


async def mark_dead(session: AsyncSession, row: ClaimedRow, *, error: str) -> bool:
    return await _update_claimed(session, _MARK_DEAD, row, error=error)


async def live_payload_values(
    session: AsyncSession, *, topics: Collection[str], field: str, values: Collection[str]
) -> set[str]:
    """Those of `values` that a pending or running row of `topics` carries as `payload[field]`."""
    carried = _M.payload[field].as_string()
    query = (
        sa.select(carried)
        .where(
            _M.status.in_((OutboxStatus.PENDING, OutboxStatus.RUNNING)),
            _M.topic.in_(topics),
            carried.in_(values),
        )
        .distinct()
    )
    return set(await session.scalars(query))


async def count_by_status(session: AsyncSession) -> dict[OutboxStatus, int]:
    rows = await session.execute(sa.select(_M.status, sa.func.count()).group_by(_M.status))
    counts = dict.fromkeys(OutboxStatus, 0)
    counts.update({status: count for status, count in rows})
    return counts


async def list_rows(
    session: AsyncSession, *, status: OutboxStatus | None, limit: int
) -> list[OutboxMessage]:
    query = sa.select(_M).order_by(_M.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(_M.status == status)
    return list(await session.scalars(query))


async def get(session: AsyncSession, row_id: uuid.UUID) -> OutboxMessage | None:
    return await session.get(_M, row_id)


async def revive(session: AsyncSession, row_id: uuid.UUID, *, now: datetime) -> bool:
    """A dead row back to pending with a fresh attempt count."""
    result = await session.execute(
        sa.update(_M)
        .where(_M.id == row_id, _M.status == OutboxStatus.DEAD)
        .values(status=OutboxStatus.PENDING, attempts=0, available_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
