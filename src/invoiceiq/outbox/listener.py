"""Wake a worker in its own process when another process commits outbox rows (PostgreSQL).

Migration 0003 has PostgreSQL notify `CHANNEL` when a transaction that added due outbox rows
commits. `listen_for_new_rows` holds one connection that listens and calls `wake` on each
notification, so `invoiceiq worker` claims a row milliseconds after `serve` stored it, instead
of at its next poll. The poll stays: it is what finds rows that fall due later, and rows written
while the listening connection was down (it reconnects, then wakes once to catch up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "invoiceiq_outbox"
APPLICATION_NAME = "invoiceiq-outbox-listener"


async def listen_for_new_rows(
    engine: AsyncEngine,
    wake: Callable[[], None],
    *,
    retry_after: float = 5.0,
    check_every: float = 30.0,
) -> None:
    """Call `wake` for every notification on `CHANNEL` until cancelled; PostgreSQL only.

    A lost connection (PostgreSQL restarted) is replaced after `retry_after` seconds; the poll
    covers the gap. `check_every` bounds how long a connection that died without telling us
    goes unnoticed.
    """
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            await _listen_once(engine, wake, check_every)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "outbox listener lost its connection; polling until it is back",
                extra={"error": type(error).__name__},
            )
        await asyncio.sleep(retry_after)


async def _listen_once(engine: AsyncEngine, wake: Callable[[], None], check_every: float) -> None:
    def notified(*_args: Any) -> None:
        wake()

    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg's Connection
        closed = asyncio.Event()
        driver.add_termination_listener(lambda _connection: closed.set())
        try:
            # Named, so that an operator (or a test) can tell it apart in pg_stat_activity.
            await driver.execute(f"SET application_name = '{APPLICATION_NAME}'")
            await driver.add_listener(CHANNEL, notified)
            log.info("outbox listener listening")
            wake()  # rows committed while nobody listened
            while not driver.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), check_every)
                if not driver.is_closed():
                    # A round trip finds a connection the server dropped silently; one that
                    # does not answer in time is given up on like a closed one.
                    await driver.execute("SELECT 1", timeout=check_every)
            raise ConnectionError("the listening connection was closed")
        finally:
            # LISTEN belongs to the connection: never hand a listening one back to the pool.
            await connection.invalidate()
