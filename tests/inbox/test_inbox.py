"""The inbox stores each provider event once, whoever delivers it and however often."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import InboxEvent
from invoiceiq.db.uow import unit_of_work
from invoiceiq.inbox import service as inbox


async def _count(sessions: SessionFactory) -> int:
    async with sessions() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0)


async def test_record_says_new_then_duplicate(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        assert await inbox.record(session, "whatsapp", "wamid.A", {"n": 1}) is True
    async with unit_of_work(sessions) as session:
        assert await inbox.record(session, "whatsapp", "wamid.A", {"n": 2}) is False
    async with sessions() as session:
        stored = await session.scalar(sa.select(InboxEvent))
    assert stored is not None and stored.payload == {"n": 1}  # the first copy is kept
    assert await _count(sessions) == 1


async def test_same_id_from_another_source_is_another_event(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        assert await inbox.record(session, "whatsapp", "X1", {})
        assert await inbox.record(session, "mpesa", "X1", {})
        assert await inbox.record(session, "whatsapp", "X1:0", {})
    assert await _count(sessions) == 2 + 1


async def test_rolled_back_event_is_not_kept(sessions: SessionFactory) -> None:
    async with sessions() as session:
        assert await inbox.record(session, "whatsapp", "wamid.B", {})
        await session.rollback()
    async with unit_of_work(sessions) as session:
        assert await inbox.record(session, "whatsapp", "wamid.B", {}) is True


async def test_concurrent_duplicates_record_exactly_once(sessions: SessionFactory) -> None:
    gate = asyncio.Event()

    async def deliver() -> bool:
        await gate.wait()
        async with unit_of_work(sessions) as session:
            return await inbox.record(session, "mpesa", "ws_CO_1:0", {"ResultCode": 0})

    racers = [asyncio.create_task(deliver()) for _ in range(6)]
    gate.set()
    assert sorted(await asyncio.gather(*racers)) == [False] * 5 + [True]
    assert await _count(sessions) == 1


async def test_an_event_is_taken_for_processing_once_and_only_when_that_commits(
    sessions: SessionFactory,
) -> None:
    async with unit_of_work(sessions) as session:
        assert await inbox.record(session, "whatsapp", "wamid.T", {})
        assert await inbox.take_unprocessed(session, "whatsapp", "wamid.never-stored") is None
    async with sessions() as session:  # a handler that failed: its mark goes with its effects
        assert await inbox.take_unprocessed(session, "whatsapp", "wamid.T") is True
        await session.rollback()
    async with unit_of_work(sessions) as session:
        assert await inbox.take_unprocessed(session, "whatsapp", "wamid.T") is True
    async with unit_of_work(sessions) as session:
        assert await inbox.take_unprocessed(session, "whatsapp", "wamid.T") is False
        event = await inbox.get(session, "whatsapp", "wamid.T")
    assert event is not None and event.processed_at is not None
