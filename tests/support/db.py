"""Test databases: PostgreSQL databases of our own, and settings for tests."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from invoiceiq.config import Settings, async_database_url

# Written as the app's DATABASE_URL may be (postgresql://…, ?sslmode=…): read the same way.
ADMIN_URL = async_database_url(
    os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
)


def url_with_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


async def admin_execute(*statements: str) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()


def create_postgres_database(name: str) -> str:
    """A fresh, empty PostgreSQL database; its URL."""
    asyncio.run(
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    )
    return url_with_database(ADMIN_URL, name)


def drop_postgres_database(name: str) -> None:
    asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(**overrides: Any) -> Settings:
    """Development settings that ignore any .env, with durations shrunk for tests."""
    values: dict[str, Any] = {"_env_file": None, "outbox_lease": 2, "outbox_max_attempts": 3}
    values.update(overrides)
    return Settings(**values)


async def create_database_async(name: str) -> str:
    """`create_postgres_database` for code already inside an event loop."""
    await admin_execute(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    return url_with_database(ADMIN_URL, name)


async def drop_database_async(name: str) -> None:
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
