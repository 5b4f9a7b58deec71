"""Group commit for inbound events: webhooks arriving together share one transaction.

A webhook hands its events to the writer and awaits the commit of the batch that holds them
before it answers 200, so nothing is acknowledged before it is stored. What the webhooks share
is the round trips and the commit: while one batch is being written, the next one gathers.
Each new event that has a handler gets its outbox row in the same transaction; the worker
handles it from there (in order per `ordering_key`: one sender's messages one at a time).

One writer task, so batches commit in the order their events arrived. A batch that fails is
written again one webhook at a time, so a single bad webhook fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.inbox import repository
from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox import service as outbox

log = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 500
# Events of one batch get distinct times, one microsecond apart in arrival order, so rows that
# share an ordering key are handled in the order they came.
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class NewEvent:
    """An inbound event to store; `topic` is the outbox topic that handles it (None: store only)."""

    source: str
    external_id: str
    payload: dict[str, Any]
    topic: str | None = None
    ordering_key: str | None = None


@dataclass
class _Waiting:
    events: list[NewEvent]
    done: asyncio.Future[list[bool]]


# Run in the batch's transaction with its events, new or repeated (so it must be idempotent);
# returns the (source, id) of those it applied there, which then need no outbox row.
ApplyNow = Callable[[AsyncSession, list[NewEvent]], Awaitable[set[tuple[str, str]]]]


class InboxWriter:
    def __init__(self, sessions: SessionFactory, *, apply_now: ApplyNow | None = None) -> None:
        self._sessions = sessions
        self._apply_now = apply_now
        self._waiting: list[_Waiting] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def stop(self) -> None:
        """Write what is waiting, then stop."""
        self._closed = True
        self._ready.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def store(self, events: list[NewEvent]) -> list[bool]:
        """Store `events` and queue their handling; True for each one that is new.

        Returns once they are committed; raises when they could not be stored. (After a lost
        connection whose transaction did commit, the batch written again finds its own events:
        they read as repeats, False, though they were stored and queued once, as they should.)
        """
        if not events:
            return []
        if self._closed or self._task is None or self._task.done():
            return await self._write_alone(events)
        waiting = _Waiting(events, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._ready.set()
        return await waiting.done

    async def _run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._waiting:
                    await self._write_batch(self._take_batch())
                if self._closed:
                    return
        finally:
            # Cancelled (the loop is closing): nobody may wait forever. The webhooks still
            # waiting answer with an error, and the provider sends them again.
            for item in self._waiting:
                _settle(item, error=RuntimeError("the inbox writer stopped"))
            self._waiting.clear()

    def _take_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._waiting:
            if batch and size + len(self._waiting[0].events) > MAX_BATCH_EVENTS:
                break
            item = self._waiting.pop(0)
            batch.append(item)
            size += len(item.events)
        return batch

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        try:
            flags = await self._write([item.events for item in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error=error)
                return
            log.warning("inbox batch not stored; storing its webhooks one by one")
            for item in batch:
                try:
                    (one,) = await self._write([item.events])
                except Exception as single_error:
                    _settle(item, error=single_error)
                else:
                    _settle(item, flags=one)
            return
        for item, item_flags in zip(batch, flags, strict=True):
            _settle(item, flags=item_flags)

    async def _write_alone(self, events: list[NewEvent]) -> list[bool]:
        (flags,) = await self._write([events])
        return flags

    async def _write(self, groups: list[list[NewEvent]]) -> list[list[bool]]:
        """`write`, once more on a new connection when the first one turned out to be dead
        (PostgreSQL restarted: the pool checks no connection before use, and SQLAlchemy then
        replaces them all). Safe to repeat: what the lost transaction committed, if it did,
        reads as repeats."""
        try:
            return await write(self._sessions, groups, self._apply_now)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            log.warning("inbox batch: the database connection was lost; writing it again")
            return await write(self._sessions, groups, self._apply_now)


def _settle(
    item: _Waiting, *, flags: list[bool] | None = None, error: BaseException | None = None
) -> None:
    if item.done.done():  # the webhook's request was cancelled (its client went away)
        return
    if error is not None:
        item.done.set_exception(error)
    else:
        item.done.set_result(flags or [])


async def write(
    sessions: SessionFactory, groups: list[list[NewEvent]], apply_now: ApplyNow | None = None
) -> list[list[bool]]:
    """Store each group's events in one transaction; per group, True for each new event.

    The events are first given to `apply_now` in that transaction (repeats too: what it applies
    must be idempotent); the new events it did not apply, and that have a topic, are queued for
    the worker. Applying first lets the inbox and outbox rows be written in one statement.

    A repeat of an event, stored before or earlier in the same batch, is False.
    """
    now = utcnow()
    firsts: dict[tuple[str, str], NewEvent] = {}
    for events in groups:
        for event in events:
            firsts.setdefault((event.source, event.external_id), event)
    async with unit_of_work(sessions) as session:
        applied = await apply_now(session, list(firsts.values())) if apply_now else set()
        rows = [
            repository.NewInboxRow(
                event.source,
                event.external_id,
                event.payload,
                now + index * _TICK,
                None if key in applied else event.topic,
                event.ordering_key,
            )
            for index, (key, event) in enumerate(firsts.items())
        ]
        stored = await repository.insert_new(session, rows)
        if any(row.topic is not None and (row.source, row.external_id) in stored for row in rows):
            outbox.note_enqueued(session)
    seen: set[tuple[str, str]] = set()
    flags: list[list[bool]] = []
    for events in groups:
        group_flags = []
        for event in events:
            key = (event.source, event.external_id)
            group_flags.append(key in stored and key not in seen)
            seen.add(key)
        flags.append(group_flags)
    return flags
