"""Enqueue: a row in the caller's transaction, deduplicated by key, waking the worker on commit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from invoiceiq.db.engine import SessionFactory, make_session_factory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.service import enqueue
from invoiceiq.outbox.states import OutboxStatus


async def _rows(sessions: SessionFactory) -> list[OutboxMessage]:
    async with sessions() as session:
        return list(await session.scalars(sa.select(OutboxMessage)))


async def test_row_exists_only_after_the_callers_commit(
    sessions: SessionFactory, db_kind: str
) -> None:
    async with sessions() as session:
        assert await enqueue(session, "test.topic", {"n": 1}, "key-1")
        if db_kind == "postgresql":
            # SQLite transactions take the write lock up front, so only PostgreSQL can look in
            # from another connection while the caller's transaction is open.
            assert await _rows(sessions) == []
        await session.commit()

    [row] = await _rows(sessions)
    assert (row.topic, row.payload, row.dedupe_key) == ("test.topic", {"n": 1}, "key-1")
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 0


async def test_rollback_leaves_no_row(sessions: SessionFactory) -> None:
    async with sessions() as session:
        await enqueue(session, "test.topic", {"n": 1}, "key-1")
        await session.rollback()

    assert await _rows(sessions) == []


async def test_same_dedupe_key_twice_adds_one_row(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        assert await enqueue(session, "test.topic", {"n": 1}, "same")
    async with unit_of_work(sessions) as session:
        assert not await enqueue(session, "test.topic", {"n": 2}, "same")

    [row] = await _rows(sessions)
    assert row.payload == {"n": 1}


async def test_same_dedupe_key_in_one_transaction_adds_one_row(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        assert await enqueue(session, "test.topic", {"n": 1}, "same")
        assert not await enqueue(session, "test.topic", {"n": 2}, "same")

    assert len(await _rows(sessions)) == 1


async def test_no_dedupe_key_always_inserts(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        assert await enqueue(session, "test.topic", {"n": 1})
        assert await enqueue(session, "test.topic", {"n": 1})
    async with unit_of_work(sessions) as session:
        assert await enqueue(session, "test.topic", {"n": 1}, None)

    rows = await _rows(sessions)
    assert len(rows) == 3
    assert all(row.dedupe_key is None for row in rows)


async def test_commit_that_enqueued_calls_on_outbox_commit_once(engine: AsyncEngine) -> None:
    calls: list[str] = []
    sessions = make_session_factory(engine, on_outbox_commit=lambda: calls.append("woken"))

    async with unit_of_work(sessions) as session:
        await enqueue(session, "test.topic", {"n": 1}, "a")
        await enqueue(session, "test.topic", {"n": 2}, "b")
    assert calls == ["woken"]

    async with unit_of_work(sessions) as session:
        await enqueue(session, "test.topic", {"n": 1}, "a")  # a duplicate adds nothing
    async with unit_of_work(sessions) as session:
        await session.execute(sa.select(1))  # a commit that enqueued nothing
    assert calls == ["woken"]


async def test_rolled_back_enqueue_does_not_wake_a_later_commit(engine: AsyncEngine) -> None:
    calls: list[str] = []
    sessions = make_session_factory(engine, on_outbox_commit=lambda: calls.append("woken"))

    async with sessions() as session:
        await enqueue(session, "test.topic", {"n": 1}, "a")
        await session.rollback()
        await session.execute(sa.select(1))
        await session.commit()

    assert calls == []
