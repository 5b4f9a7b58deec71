"""Async engine and session factory for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000

SessionFactory = async_sessionmaker[AsyncSession]


def is_database_down(error: BaseException) -> bool:
    """The database could not be reached, or the connection broke (or the pool had none to
    give): not the statement's fault, so worth trying again in a while."""
    if isinstance(error, _DOWN):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


# A refused or reset connection reaches us raw (asyncpg connects before SQLAlchemy wraps
# anything), a server gone mid-statement as OperationalError/InterfaceError, a host that does
# not resolve as gaierror, a full pool as SQLAlchemy's own TimeoutError.
_DOWN = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    ConnectionError,
    socket.gaierror,
    TimeoutError,
)


class DatabaseUnreachable(Exception):
    """The database named by DATABASE_URL cannot be used (unreachable, missing, or not
    migrated): a configuration problem, told in a sentence rather than a traceback."""


async def check_connection(engine: AsyncEngine) -> None:
    """Connect once: a wrong URL, host or password gets a clear message (DatabaseUnreachable),
    while a failure after that (a bug, not configuration) keeps its traceback."""
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError) as error:
        where = engine.url.render_as_string(hide_password=True)
        reason = getattr(error, "orig", None) or error
        raise DatabaseUnreachable(
            f"cannot connect to {where} ({type(reason).__name__}: {reason}); check DATABASE_URL"
        ) from error


def make_engine(database_url: str, *, pool_size: int = 15, max_overflow: int = 5) -> AsyncEngine:
    """Parameters are left out of database errors (`hide_parameters`): they hold message
    text and phone numbers, and an error's text reaches logs and the outbox's last error.

    No ping before each checkout: it costs a round trip on every transaction. A connection
    found dead (PostgreSQL restarted) fails that one transaction, which is retried (the worker)
    or answered with an error (a request; providers re-send), and SQLAlchemy then replaces
    every connection of the pool opened before the failure. Most connections stay in the pool
    (`pool_size`), so busy moments do not open and close connections over and over."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(
            database_url, connect_args={"timeout": 30}, hide_parameters=True
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        hide_parameters=True,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, a busy timeout, and writes serialised.

    Every transaction starts with BEGIN IMMEDIATE, so it takes SQLite's single write lock up
    front: a second writer waits (busy timeout) instead of failing halfway with "database is
    locked" when it tries to upgrade a read lock. See https://www.sqlite.org/lang_transaction.html
    and SQLAlchemy's "Serializable isolation / Savepoints / Transactional DDL" notes for pysqlite.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so our BEGIN IMMEDIATE is the one used.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(
    engine: AsyncEngine, *, on_outbox_commit: Callable[[], None] | None = None
) -> SessionFactory:
    """Sessions that, once committed with new outbox rows, call `on_outbox_commit`.

    That is how a request that enqueues wakes the in-process worker at once.
    """
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        info={"on_outbox_commit": on_outbox_commit},
    )


def single_statement_sessions(sessions: SessionFactory) -> SessionFactory:
    """Sessions for a unit of work that is one statement, which is atomic on its own.

    On PostgreSQL they run without BEGIN and COMMIT (autocommit: the statement is its own
    transaction), two round trips fewer each. SQLite keeps its BEGIN IMMEDIATE: the same
    sessions are returned.
    """
    if not isinstance(sessions, async_sessionmaker):
        return sessions  # a factory we cannot look into (tests wrap theirs) is used as it is
    engine = sessions.kw.get("bind")
    if engine is None or engine.dialect.name != "postgresql":
        return sessions
    options = {**sessions.kw, "bind": engine.execution_options(isolation_level="AUTOCOMMIT")}
    return async_sessionmaker(**options)


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop("outbox_enqueued", False):
        callback = session.info.get("on_outbox_commit")
        if callback is not None:
            callback()


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop("outbox_enqueued", None)
