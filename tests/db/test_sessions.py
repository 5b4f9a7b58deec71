"""Single-statement sessions: on PostgreSQL no BEGIN/COMMIT around one statement; SQLite as is."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.engine import SessionFactory, single_statement_sessions
from invoiceiq.db.models import InboxEvent
from invoiceiq.db.uow import unit_of_work


async def in_transaction(session: AsyncSession) -> bool:
    """Whether the driver's connection under `session` is inside a transaction block."""
    connection = await session.connection()
    raw: Any = (await connection.get_raw_connection()).driver_connection
    return bool(raw.is_in_transaction())


async def test_on_postgresql_a_single_statement_runs_outside_a_transaction_block(
    db_kind: str, sessions: SessionFactory
) -> None:
    statements = single_statement_sessions(sessions)
    if db_kind == "sqlite":
        # BEGIN IMMEDIATE is what serialises SQLite's writers: the same sessions are kept.
        assert statements is sessions
        return
    async with unit_of_work(statements) as session:
        await session.execute(sa.select(1))
        assert not await in_transaction(session)
    async with unit_of_work(sessions) as session:
        await session.execute(sa.select(1))
        assert await in_transaction(session)


async def test_a_single_statement_commits_and_the_pool_keeps_transactions_for_the_others(
    db_kind: str, sessions: SessionFactory
) -> None:
    statements = single_statement_sessions(sessions)
    async with unit_of_work(statements) as session:
        await session.execute(
            sa.insert(InboxEvent).values(source="test", external_id="single", payload={})
        )
    async with sessions() as session:
        stored = await session.scalar(
            sa.select(sa.func.count()).select_from(InboxEvent).where(InboxEvent.source == "test")
        )
        # A connection that served the single statements went back to the pool: sessions of
        # the usual kind still get a transaction, and a rollback undoes their work.
        await session.execute(
            sa.insert(InboxEvent).values(source="test", external_id="rolled-back", payload={})
        )
        await session.rollback()
    assert stored == 1
    async with sessions() as session:
        ids = await session.scalars(
            sa.select(InboxEvent.external_id).where(InboxEvent.source == "test")
        )
        assert list(ids) == ["single"]
