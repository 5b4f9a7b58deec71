"""The outbox listener: another process's commit of due rows wakes the worker (PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invoiceiq.db.engine import SessionFactory, make_engine, make_session_factory
from invoiceiq.db.migrate import MIGRATIONS
from invoiceiq.db.uow import unit_of_work
from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox import listener
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.service import enqueue

# Generous bound for a loaded machine; a test waits this long only when it is failing.
PATIENCE = 10.0


class Wakes:
    """Counts calls of `wake`, and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> None:
        self.count += 1
        task = asyncio.get_running_loop().create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def reach(self, n: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.count >= n), PATIENCE)


@contextlib.asynccontextmanager
async def listening(engine: AsyncEngine, **options: float) -> AsyncIterator[Wakes]:
    """A listener on its own engine, as in `invoiceiq worker`; it has woken once to catch up."""
    wakes = Wakes()
    task = asyncio.create_task(listener.listen_for_new_rows(engine, wakes, **options))
    try:
        await wakes.reach(1)
        yield wakes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def listener_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


def postgres_only(db_kind: str) -> None:
    if db_kind != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has one process, whose commits wake its worker")


async def add_row(sessions: SessionFactory, name: str, *, due_in: float = 0.0) -> None:
    async with unit_of_work(sessions) as session:
        await enqueue(
            session,
            "test.listen",
            {"name": name},
            not_before=utcnow() + timedelta(seconds=due_in),
        )


async def test_a_commit_of_a_due_row_elsewhere_wakes_the_worker(
    db_kind: str, listener_engine: AsyncEngine, sessions: SessionFactory, unique: str
) -> None:
    postgres_only(db_kind)
    async with listening(listener_engine) as wakes:
        await add_row(sessions, f"{unique}-1")
        await wakes.reach(2)
        await add_row(sessions, f"{unique}-2")
        await wakes.reach(3)


async def test_the_trigger_notifies_once_per_commit_of_due_rows_and_never_otherwise(
    db_kind: str, listener_engine: AsyncEngine, unique: str
) -> None:
    """PostgreSQL hands a connection its own notifications when its commit completes, so one
    connection that listens and writes counts them exactly."""
    postgres_only(db_kind)
    table = OutboxMessage.__table__
    received: list[str] = []

    def row(name: str, *, due_in: float = 0.0) -> dict[str, object]:
        at = utcnow() + timedelta(seconds=due_in)
        return {
            "topic": "test.trigger",
            "payload": {"name": f"{unique}-{name}"},
            "available_at": at,
        }

    async def commit(connection: AsyncConnection, *rows: dict[str, object]) -> int:
        await connection.execute(sa.insert(table), list(rows))
        await connection.commit()
        await asyncio.sleep(0)  # asyncpg runs listener callbacks on the next loop turn
        return len(received)

    async with listener_engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.add_listener(listener.CHANNEL, lambda *args: received.append(args[2]))
        try:
            assert await commit(connection, row("later", due_in=3600)) == 0
            await connection.execute(sa.insert(table), [row("rolled-back")])
            await connection.rollback()
            assert len(received) == 0
            assert (
                await commit(connection, row("due-1"), row("due-2"), row("later-2", due_in=60)) == 1
            )
            assert await commit(connection, row("due-3")) == 2
        finally:
            await connection.invalidate()
    assert received == [listener.CHANNEL, listener.CHANNEL]


async def test_after_its_connection_is_dropped_the_listener_reconnects_and_catches_up(
    db_kind: str, database_url: str, sessions: SessionFactory, unique: str
) -> None:
    postgres_only(db_kind)
    engine = make_engine(database_url)
    try:
        async with listening(engine, retry_after=0.05, check_every=0.2) as wakes:
            async with engine.connect() as connection:
                dropped = await connection.scalar(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = :name"
                    ),
                    {"name": listener.APPLICATION_NAME},
                )
            assert dropped == 1
            # Reconnected: it wakes once to pick up what was committed while it was away.
            await wakes.reach(2)
            await add_row(make_session_factory(engine), f"{unique}-after")
            await wakes.reach(3)
    finally:
        await engine.dispose()


async def test_on_sqlite_the_listener_returns_at_once(
    db_kind: str, listener_engine: AsyncEngine
) -> None:
    if db_kind != "sqlite":
        pytest.skip("the SQLite half")
    wakes = Wakes()
    await asyncio.wait_for(listener.listen_for_new_rows(listener_engine, wakes), PATIENCE)
    assert wakes.count == 0


def test_the_migration_notifies_on_the_channel_the_listener_listens_on() -> None:
    migration = next((MIGRATIONS / "versions").glob("0003_*.py"))
    assert f"pg_notify('{listener.CHANNEL}'" in Path(migration).read_text()
