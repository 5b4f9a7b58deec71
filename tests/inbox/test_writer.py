"""Group commit of inbound events (inbox/writer.py): stored once, queued once, in order."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import InboxEvent
from invoiceiq.inbox import repository as inbox_repository
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
        # A repeat is given again (applying must be idempotent) and queues nothing.
        assert await writer.store([event(f"{unique}-1-now"), event(f"{unique}-2-later")]) == [
            False,
            False,
        ]
    finally:
        await writer.stop()

    assert seen == [[f"{unique}-1-now", f"{unique}-2-later"]] * 2
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
    db_kind: str, sessions: SessionFactory, unique: str
) -> None:
    # What apply_now wrote, and the inbox and outbox rows, commit together or not at all. A
    # half-written batch could mark statuses applied for events that are not stored, or store
    # events that are never queued (never handled). Here apply_now writes a row of its own, then
    # storing the batch fails: on PostgreSQL inside the one statement, once its inbox rows are
    # written (a topic longer than the outbox's column); on SQLite, whose columns have no
    # length, when the second event's payload is written (it is not JSON).
    calls = itertools.count(1)

    async def write_then_go_on(
        session: AsyncSession, events: list[NewEvent]
    ) -> set[tuple[str, str]]:
        await inbox_repository.insert_event(
            session, source="test", external_id=f"{unique}-applied-{next(calls)}", payload={}
        )
        return set()

    if db_kind == "postgresql":
        bad = event(f"{unique}-2", topic="t" * 65)
    else:
        bad = event(f"{unique}-2", payload={"id": f"{unique}-2", "x": {1}})
    writer = InboxWriter(sessions, apply_now=write_then_go_on)
    writer.start()
    try:
        with pytest.raises(sa.exc.StatementError):
            await writer.store([event(f"{unique}-1"), bad])
        # The writer goes on: the next webhook is stored with its outbox row, and what its
        # apply_now wrote with them.
        assert await writer.store([event(f"{unique}-3")]) == [True]
    finally:
        await writer.stop()

    assert await stored_ids(sessions, unique) == [f"{unique}-3", f"{unique}-applied-2"]
    assert [r.payload["id"] for r in await queued(sessions, unique)] == [f"{unique}-3"]


async def test_after_postgresql_drops_its_connections_the_next_webhook_is_still_stored(
    db_kind: str, database_url: str, sessions: SessionFactory, unique: str
) -> None:
    if db_kind != "postgresql":
        pytest.skip("PostgreSQL only: a server that restarts drops every connection")
    writer = InboxWriter(sessions)
    writer.start()
    try:
        assert await writer.store([event(f"{unique}-before")]) == [True]
        # As a restart does: every connection of the pool is now dead, and nobody checks a
        # connection before use.
        await drop_other_connections(database_url)
        assert await writer.store([event(f"{unique}-after")]) == [True]
    finally:
        await writer.stop()

    assert await stored_ids(sessions, unique) == [f"{unique}-after", f"{unique}-before"]
    assert len(await queued(sessions, unique)) == 2


async def drop_other_connections(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            dropped = await connection.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert dropped
    finally:
        await engine.dispose()
