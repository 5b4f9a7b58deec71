"""Migrations: upgrade → downgrade → upgrade on both databases, and no drift from the models."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from invoiceiq.db import migrate
from invoiceiq.db.engine import make_engine
from invoiceiq.db.models import Base
from support.db import create_database_async, drop_database_async

EXPECTED_TABLES = {
    "merchant",
    "customer",
    "invoice",
    "payment",
    "conversation",
    "message_log",
    "inbox_event",
    "outbox_message",
    "provider_token",
    "api_key",
    "idempotency_record",
    "rate_limit_counter",
}


@pytest.fixture
async def empty_engine(db_kind: str, tmp_path: Path) -> Any:
    if db_kind == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        await engine.dispose()
        return
    name = f"invoiceiq_migrations_{uuid.uuid4().hex[:8]}"
    engine = make_engine(await create_database_async(name))
    yield engine
    await engine.dispose()
    await drop_database_async(name)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
    return set(names) - {"alembic_version"}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_downgrade_upgrade_leaves_no_drift(empty_engine: AsyncEngine) -> None:
    await migrate.upgrade(empty_engine)
    assert await _tables(empty_engine) == EXPECTED_TABLES
    assert await migrate.is_at_head(empty_engine)

    await migrate.downgrade(empty_engine, "base")
    assert await _tables(empty_engine) == set()
    assert not await migrate.is_at_head(empty_engine)

    await migrate.upgrade(empty_engine)
    assert await _tables(empty_engine) == EXPECTED_TABLES
    async with empty_engine.connect() as connection:
        differences = await connection.run_sync(_diff)
    assert differences == []


async def test_autogenerate_would_notice_a_model_change(empty_engine: AsyncEngine) -> None:
    """The drift check above can fail: a column the migrations lack is reported."""
    await migrate.upgrade(empty_engine)
    extra = sa.Column("not_migrated", sa.String(10))
    table = Base.metadata.tables["merchant"]
    table.append_column(extra)
    try:
        async with empty_engine.connect() as connection:
            differences = await connection.run_sync(_diff)
    finally:
        table._columns.remove(extra)  # undo, so other tests see the real model
    assert any(d[0] == "add_column" and d[3].name == "not_migrated" for d in differences)


async def test_processes_upgrading_together_do_not_race(empty_engine: AsyncEngine) -> None:
    """Processes starting together all migrate: the advisory lock (PostgreSQL) or SQLite's write
    lock makes the later ones wait, then find nothing to do. Real processes, because Alembic's
    context is process-global."""
    url = empty_engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url}
    commands = [
        asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "invoiceiq",
            "db",
            "upgrade",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    processes = [await command for command in commands]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    for process, (output, _) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output.decode()
    assert await migrate.is_at_head(empty_engine)
    assert await _tables(empty_engine) == EXPECTED_TABLES
