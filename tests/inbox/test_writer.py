"""Group commit of inbound events (inbox/writer.py): stored once, queued once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import InboxEvent
from invoiceiq.inbox.writer import InboxWriter, NewEvent
from invoiceiq.outbox.models import OutboxMessage

TOPIC = "test.inbound"


@pytest.fixture
async def writer(sessions: SessionFactory) -> AsyncIterator[InboxWriter]:
    writer = InboxWriter(sessions)
    writer.start()
    yield writer
    await writer.stop()


def event(external_id: str, **overrides: Any) -> NewEvent:
    values: dict[str, Any] = {
        "source": "test",
        "external_id": external_id,
        "payload": {"id": external_id},
        "topic": TOPIC,
        "ordering_key": None,
    }
    values.update(overrides)
    return NewEvent(**values)


async def stored_ids(sessions: SessionFactory, prefix: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            sa.select(InboxEvent.external_id).where(InboxEvent.external_id.startswith(prefix))
        )
        return sorted(rows)


async def queued(sessions: SessionFactory, prefix: str) -> list[OutboxMessage]:
    async with sessions() as session:
        rows = await session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.topic == TOPIC)
            .where(OutboxMessage.payload["id"].as_string().startswith(prefix))
            .order_by(OutboxMessage.created_at)
        )
        return list(rows)


async def test_concurrent_webhooks_share_commits_and_each_event_is_stored_once(
    writer: InboxWriter, sessions: SessionFactory, engine: AsyncEngine, unique: str
) -> None:
    commits: list[int] = []

    def count(_connection: Any) -> None:
        commits.append(1)

    sa.event.listen(engine.sync_engine, "commit", count)
    try:
        # 40 webhooks at once, each with one event; every fourth repeats an earlier one.
        ids = [f"{unique}-{n if n % 4 else n // 4}" for n in range(40)]
        flags = await asyncio.gather(*(writer.store([event(i)]) for i in ids))
    finally:
        sa.event.remove(engine.sync_engine, "commit", count)

    new_per_id: dict[str, int] = {}
    for external_id, (flag,) in zip(ids, flags, strict=True):
        new_per_id[external_id] = new_per_id.get(external_id, 0) + flag
    assert set(new_per_id.values()) == {1}  # each id is new exactly once
    assert await stored_ids(sessions, unique) == sorted(set(ids))
    assert sorted(r.payload["id"] for r in await queued(sessions, unique)) == sorted(set(ids))
    assert 1 <= len(commits) <= 4  # shared, not one transaction per webhook


async def test_an_event_stored_before_is_a_repeat_and_not_queued_again(
    writer: InboxWriter, sessions: SessionFactory, unique: str
) -> None:
    assert await writer.store([event(f"{unique}-a")]) == [True]
    assert await writer.store([event(f"{unique}-a"), event(f"{unique}-b")]) == [False, True]
    assert await writer.store([event(f"{unique}-b"), event(f"{unique}-b")]) == [False, False]
    assert len(await queued(sessions, unique)) == 2


async def test_an_event_without_a_topic_is_stored_only(
    writer: InboxWriter, sessions: SessionFactory, unique: str
) -> None:
    assert await writer.store([event(f"{unique}-x", topic=None)]) == [True]
    assert await stored_ids(sessions, unique) == [f"{unique}-x"]
    assert await queued(sessions, unique) == []


async def test_one_senders_events_are_queued_in_the_order_they_came(
    writer: InboxWriter, sessions: SessionFactory, unique: str
) -> None:
    key = f"in:{unique}"
    ids = [f"{unique}-{n:02d}" for n in range(12)]
    # Separate webhooks (one batch), then two events in one webhook.
    await asyncio.gather(*(writer.store([event(i, ordering_key=key)]) for i in ids[:10]))
    await writer.store([event(ids[10], ordering_key=key), event(ids[11], ordering_key=key)])

    rows = await queued(sessions, unique)
    assert [r.payload["id"] for r in rows] == ids
    assert len({r.created_at for r in rows}) == len(ids)  # no ties for the claim to break
    assert all(r.ordering_key == key for r in rows)


async def test_a_webhook_that_cannot_be_stored_fails_alone(
    writer: InboxWriter, sessions: SessionFactory, unique: str
) -> None:
    # A payload that is not JSON fails the batch it is in; the others are written again alone.
    bad = event(f"{unique}-bad", payload={"id": f"{unique}-bad", "oops": {1, 2}})
    good = [event(f"{unique}-good-{n}") for n in range(5)]
    results = await asyncio.gather(
        *(writer.store([e]) for e in good[:2]),
        writer.store([bad]),
        *(writer.store([e]) for e in good[2:]),
        return_exceptions=True,
    )

    assert [r for r in results if isinstance(r, BaseException)] == [results[2]]
    assert [r for r in results if not isinstance(r, BaseException)] == [[True]] * 5
    assert await stored_ids(sessions, unique) == sorted(e.external_id for e in good)
    assert len(await queued(sessions, unique)) == 5


async def test_stop_writes_the_webhooks_still_waiting(
    sessions: SessionFactory, unique: str
) -> None:
    writer = InboxWriter(sessions)
    writer.start()
    waiting = [asyncio.create_task(writer.store([event(f"{unique}-{n}")])) for n in range(5)]
    await asyncio.sleep(0)  # they are queued with the writer
    await writer.stop()

    assert [await task for task in waiting] == [[True]] * 5
    assert len(await stored_ids(sessions, unique)) == 5
    # After stop, a straggler is still stored (in a transaction of its own), never dropped.
    assert await writer.store([event(f"{unique}-late")]) == [True]
    assert len(await stored_ids(sessions, unique)) == 6


async def test_nothing_to_store_touches_nothing(writer: InboxWriter) -> None:
    assert await writer.store([]) == []


async def test_events_applied_in_the_batch_are_not_queued(
    sessions: SessionFactory, unique: str
) -> None:
    seen: list[list[str]] = []

    async def apply_now(session: AsyncSession, events: list[NewEvent]) -> set[tuple[str, str]]:
        seen.append([e.external_id for e in events])
        return {(e.source, e.external_id) for e in events if e.external_id.endswith("-now")}

    writer = InboxWriter(sessions, apply_now=apply_now)
    writer.start()
    try:
        await writer.store([event(f"{unique}-1-now"), event(f"{unique}-2-later")])
        await writer.store([event(f"{unique}-1-now")])  # a repeat: not given again
    finally:
        await writer.stop()

    assert seen == [[f"{unique}-1-now", f"{unique}-2-later"]]
    assert await stored_ids(sessions, unique) == [f"{unique}-1-now", f"{unique}-2-later"]
    assert [r.payload["id"] for r in await queued(sessions, unique)] == [f"{unique}-2-later"]


async def test_a_writer_cancelled_mid_way_leaves_no_webhook_waiting_forever(
    sessions: SessionFactory, unique: str
) -> None:
    writer = InboxWriter(sessions)
    writer.start()
    await asyncio.sleep(0)  # the writer waits for work
    assert writer._task is not None
    waiting = asyncio.create_task(writer.store([event(f"{unique}-1")]))
    await asyncio.sleep(0)  # the webhook is queued with the writer, which is about to wake
    writer._task.cancel()
    # Queued before the cancel took effect: it fails loudly (the provider sends it again).
    with pytest.raises(RuntimeError, match="inbox writer stopped"):
        await asyncio.wait_for(waiting, 5)
    # Once the writer is gone, a webhook is written in a transaction of its own.
    assert await writer.store([event(f"{unique}-2")]) == [True]


async def test_a_batch_is_one_transaction_stored_and_queued_together_or_not_at_all(
    sessions: SessionFactory, unique: str
) -> None:
    # A failure after the inbox rows are written (here in apply_now, before the outbox rows)
    # must take the inbox rows with it: an event stored but never queued would never be handled.
    async def fail_after_storing(
        session: AsyncSession, events: list[NewEvent]
    ) -> set[tuple[str, str]]:
        stored = await session.scalar(
            sa.select(sa.func.count())
            .select_from(InboxEvent)
            .where(InboxEvent.external_id.startswith(unique))
        )
        assert stored == 2  # written, not yet committed
        raise RuntimeError("the process died here")

    writer = InboxWriter(sessions, apply_now=fail_after_storing)
    writer.start()
    try:
        with pytest.raises(RuntimeError):
            await writer.store([event(f"{unique}-1"), event(f"{unique}-2")])
    finally:
        await writer.stop()

    assert await stored_ids(sessions, unique) == []
    assert await queued(sessions, unique) == []
