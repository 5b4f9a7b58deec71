"""Run Alembic migrations from code; PostgreSQL takes an advisory lock so starters don't race."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number works: every InvoiceIQ process that migrates takes this one.
ADVISORY_LOCK_KEY = 7_141_180_042


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migrations shipped with this code (read once: they cannot change at run time)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    return _scripts().get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_locked, lambda c: command.upgrade(alembic_config(c), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_locked, lambda c: command.downgrade(alembic_config(c), revision))


def _locked(connection: Connection, run: object) -> None:
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        # Session-level lock: released below or when the connection closes, whatever happens.
        connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()
    try:
        run(connection)  # type: ignore[operator]
        connection.commit()
    finally:
        if postgres:
            connection.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            connection.commit()


MigrationState = Literal["current", "behind", "ahead"]


async def migration_state(engine: AsyncEngine) -> MigrationState:
    """Where the database stands against this code's migrations: at its head, behind it (or
    never migrated), or ahead: migrated by newer code, as while a deploy whose release step
    migrated first replaces the machines still running the old code."""
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )
    if current is not None and current == head_revision():
        return "current"
    if current is None or _known(current):
        return "behind"
    return "ahead"


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


async def is_at_head(engine: AsyncEngine) -> bool:
    return await migration_state(engine) == "current"
