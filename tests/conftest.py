"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_POSTGRES_URL (default: the local server, database `test`, whose
connection is used only to create a database of our own). Under CI=true a missing PostgreSQL
fails the run; locally its half is skipped, and the summary says so loudly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from invoiceiq.config import Settings
from invoiceiq.db import migrate
from invoiceiq.db.engine import SessionFactory, make_engine, make_session_factory
from invoiceiq.db.models import Base
from support.cli import Invoke, invoker
from support.db import (
    ADMIN_URL,
    admin_execute,
    create_postgres_database,
    drop_postgres_database,
    make_settings,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_skipped_postgres: list[str] = []


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        asyncio.run(admin_execute("SELECT 1"))
    except Exception as error:  # any failure to connect means "not here"
        message = f"PostgreSQL at {sa.make_url(ADMIN_URL).render_as_string()} unreachable: {error}"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        _skipped_postgres.append(message)
        return False
    return True


@pytest.fixture(scope="session")
def postgres_template(postgres_available: bool) -> Iterator[str | None]:
    """One migrated PostgreSQL database per run; tests empty it after themselves."""
    if not postgres_available:
        yield None
        return
    name = f"invoiceiq_test_{os.getpid()}"
    url = create_postgres_database(name)
    asyncio.run(_migrate(url))
    yield url
    drop_postgres_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgresql" and not request.getfixturevalue("postgres_available"):
        pytest.skip("PostgreSQL unreachable (see the summary)")
    return kind


@pytest.fixture
def database_url(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if db_kind == "sqlite":
        path = tmp_path / "invoiceiq.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_template")
    yield url
    asyncio.run(_truncate_all(url))


async def _truncate_all(url: str) -> None:
    engine = create_async_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Development settings on the test database, with durations shrunk for tests."""
    return make_settings(database_url=database_url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
async def session(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back at the end unless the test commits it."""
    async with sessions() as session:
        yield session
        await session.rollback()


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """`invoiceiq …` in-process against the test database."""
    return invoker(database_url, tmp_path, monkeypatch)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped_postgres:
        terminalreporter.section("POSTGRESQL SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            "!!! The PostgreSQL half of the suite did NOT run: " + _skipped_postgres[0],
            red=True,
            bold=True,
        )
