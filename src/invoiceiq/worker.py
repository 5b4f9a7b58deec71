"""The outbox worker: claim due rows with a lease, run handlers outside any transaction.

Handlers run at least once: a row whose worker dies is claimed again when its lease expires,
so each handler must be safe to re-run (STYLE §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.engine import SessionFactory, single_statement_sessions
from invoiceiq.db.uow import unit_of_work
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.phone import mask_phones_in_text
from invoiceiq.kit.text import without_value_details
from invoiceiq.ops import metrics
from invoiceiq.outbox import repository
from invoiceiq.outbox.repository import ClaimedRow

log = logging.getLogger(__name__)


class Recorded(enum.Enum):
    """What a handler returns when it recorded its row's outcome itself (`finish`)."""

    DONE = "done"
    LEASE_LOST = "lease_lost"


# A handler returns None (the worker marks the row done in a transaction of its own) or what
# `finish` returned (the handler marked it done in its own last transaction: one commit fewer).
Handler = Callable[[ClaimedRow], Awaitable[Recorded | None]]
# A topic's bookkeeping for a row that goes dead with its last run unfinished (the worker was
# killed mid-run every time, or the last run went past the handler timeout): its handler never
# saw the end, so this records what it would have. Called with the row's payload, in the
# transaction that marks the row dead.
OnAbandoned = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]
# A topic's bookkeeping for any row of it going dead (retries used up, or abandoned): for
# work a person must now pick up (payments/sweep.py, a success claim no job will confirm).
OnDead = OnAbandoned
# A periodic look for work no row will do any more (payments/sweep.py), run in a transaction
# of its own every `sweep_interval`; it queues rows, and returns how many.
Sweep = Callable[[AsyncSession, datetime], Awaitable[int]]
MAX_ERROR_CHARS = 2000
# While claims keep failing (the database down), how often the worker says so again.
CLAIM_FAILURE_LOG_EVERY_S = 60.0
# 2**63 times any base is past any sensible backoff_max; a larger exponent overflows a float.
_MAX_BACKOFF_EXPONENT = 63


async def finish(session: AsyncSession, row: ClaimedRow) -> Recorded:
    """Mark `row` done in the handler's transaction, alongside the effects it records.

    Lease lost (another worker holds the row now): the effects still commit, as they would had
    the worker recorded the outcome after them; handlers are safe to run twice.
    """
    if await repository.mark_done(session, row, now=utcnow()):
        return Recorded.DONE
    return Recorded.LEASE_LOST


class RetryLater(Exception):
    """Raised by a handler for a transient failure: try again after backoff (or `delay`)."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class GiveUp(Exception):
    """Raised by a handler when retrying cannot help: the row goes dead at once."""


@dataclass(frozen=True)
class WorkerOptions:
    lease: float = 60.0
    max_attempts: int = 8
    concurrency: int = 16
    poll_interval: float = 1.0
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    # How long SIGTERM waits for handlers in hand before releasing their rows.
    stop_grace: float = 10.0
    # The longest one run of a handler may take: then it is cancelled and its row retried.
    handler_timeout: float = 120.0
    # How often the sweeps run (each worker process runs them; they are safe side by side).
    sweep_interval: float = 60.0


class Worker:
    def __init__(
        self,
        sessions: SessionFactory,
        handlers: Mapping[str, Handler],
        options: WorkerOptions,
        *,
        on_abandoned: Mapping[str, OnAbandoned] | None = None,
        on_dead: Mapping[str, OnDead] | None = None,
        sweeps: Sequence[Sweep] = (),
    ) -> None:
        self._sessions = sessions
        # Claims and outcomes are one statement each (`repository`): no BEGIN/COMMIT needed.
        self._statements = single_statement_sessions(sessions)
        self._handlers = dict(handlers)
        self._on_abandoned = dict(on_abandoned or {})
        self._on_dead = dict(on_dead or {})
        self._options = options
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], ClaimedRow] = {}
        # Held from claim to task start, so stop() never misses rows claimed as it begins.
        self._claiming = asyncio.Lock()
        self._buried_at = -math.inf
        self._sweeps = tuple(sweeps)
        self._swept_at = -math.inf
        self._failing_since: float | None = None  # claims failing since (monotonic)
        self._failure_logged_at = -math.inf

    def wake(self) -> None:
        """Claim now instead of at the next poll (called when a local commit enqueued)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run rows until `stop()`."""
        while not self._stopping:
            self._wake.clear()
            free = self._options.concurrency - len(self._in_flight)
            claimed = 0
            try:
                if free > 0:
                    claimed = await self._claim_and_start(free)
                else:
                    await self._sweep_if_due(utcnow())  # no claim to run it: every slot is busy
            except Exception:
                self._claim_failed()
            else:
                self._claim_worked()
            if claimed and claimed == free:
                continue  # there may be more due rows; loop again after yielding once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._options.poll_interval)

    def _claim_failed(self) -> None:
        """The first failure with its stack; while they go on (the database down, say), one
        line a minute rather than a stack every poll."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._failure_logged_at = now
            log.exception("outbox claim failed")
        elif now - self._failure_logged_at >= CLAIM_FAILURE_LOG_EVERY_S:
            self._failure_logged_at = now
            log.warning(
                "outbox claims still failing",
                extra={"failing_for_s": round(now - self._failing_since)},
            )

    def _claim_worked(self) -> None:
        if self._failing_since is not None:
            failed_for = round(time.monotonic() - self._failing_since)
            self._failing_since = None
            log.warning("outbox claims work again", extra={"failed_for_s": failed_for})

    async def run_until_idle(self) -> None:
        """Run every due row, including ones the handlers enqueue, then return (tests, CLI)."""
        while True:
            claimed = await self._claim_and_start(self._options.concurrency)
            if not claimed and not self._in_flight:
                return
            if self._in_flight:
                await asyncio.wait(list(self._in_flight))

    async def stop(self) -> None:
        """Stop claiming; let handlers in hand finish, or release their rows after the grace."""
        self._stopping = True
        self._wake.set()
        async with self._claiming:
            pass  # a claim under way has now put its rows in _in_flight
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(list(self._in_flight), timeout=self._options.stop_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _claim_and_start(self, limit: int) -> int:
        async with self._claiming:
            if self._stopping:
                return 0
            rows = await self._claim(limit)
            for row in rows:
                task = asyncio.create_task(self._perform(row), name=f"outbox:{row.topic}")
                self._in_flight[task] = row
                task.add_done_callback(self._forget)
        return len(rows)

    async def _claim(self, limit: int) -> list[ClaimedRow]:
        now = utcnow()
        token = uuid.uuid4().hex
        # Abandoned rows are rare and wait a lease anyway: look for them once per poll
        # interval, not in every claim. The claim, after, sees what the burial did.
        if time.monotonic() - self._buried_at >= self._options.poll_interval:
            self._buried_at = time.monotonic()
            await self._bury_abandoned(now)
        await self._sweep_if_due(now)
        async with unit_of_work(self._statements) as session:
            return await repository.claim(
                session,
                now=now,
                lease_until=now + timedelta(seconds=self._options.lease),
                limit=limit,
                token=token,
                max_attempts=self._options.max_attempts,
            )

    async def _bury_abandoned(self, now: datetime) -> None:
        """Rows whose last allowed run never finished go dead, each with its topic's
        bookkeeping, in one transaction.

        Only once that run has surely ended: its lease ran out more than a handler timeout ago
        (a run that lost its lease to a database outage is cancelled at the timeout), so a slow
        but live worker's send is not reported as failed while it still goes out.
        """
        grace = timedelta(seconds=self._options.handler_timeout)
        async with unit_of_work(self._sessions) as session:
            buried = await repository.bury_abandoned(
                session, expired_before=now - grace, max_attempts=self._options.max_attempts
            )
            for row in buried:
                hooks = self._dead_hooks(row.topic, unfinished=True)
                await self._bookkeeping(session, row.id, row.topic, row.payload, hooks)
        for row in buried:
            metrics.OUTBOX_OUTCOMES.labels(topic=row.topic, outcome="dead").inc()

    async def _sweep_if_due(self, now: datetime) -> None:
        """Each sweep in its own transaction, once per `sweep_interval`: one that fails
        (logged) keeps none of its work and runs again at the next interval; the others, and
        the claim, go on."""
        if not self._sweeps or time.monotonic() - self._swept_at < self._options.sweep_interval:
            return
        self._swept_at = time.monotonic()
        for sweep in self._sweeps:
            try:
                async with unit_of_work(self._sessions) as session:
                    await sweep(session, now)
            except Exception:
                log.exception("outbox sweep failed; run again later")

    def _dead_hooks(self, topic: str, *, unfinished: bool) -> list[OnDead]:
        """The topic's bookkeeping for a row going dead: its on_dead hook, and its on_abandoned
        one first when the last run never finished."""
        hooks = [self._on_abandoned.get(topic) if unfinished else None, self._on_dead.get(topic)]
        return [hook for hook in hooks if hook is not None]

    async def _bookkeeping(
        self,
        session: AsyncSession,
        row_id: uuid.UUID,
        topic: str,
        payload: dict[str, Any],
        hooks: list[OnDead],
    ) -> None:
        """Run `hooks` (`_dead_hooks`), each in a savepoint: should one fail, the row goes dead
        without it (logged), and other rows keep theirs."""
        for hook in hooks:
            try:
                async with session.begin_nested():
                    await hook(session, payload)
            except Exception:
                log.exception(
                    "outbox bookkeeping of a dead row failed; it goes dead without it",
                    extra={"topic": topic, "row": str(row_id)},
                )

    def _forget(self, task: asyncio.Task[None]) -> None:
        was_full = len(self._in_flight) >= self._options.concurrency
        row = self._in_flight.pop(task, None)
        if was_full or (row is not None and row.ordering_key is not None):
            # A slot opened where none was, or the next row of this ordering key (the same
            # chat's) may be waiting for this one: claim now. Otherwise a finished handler
            # needs no claim of its own; rows it enqueued wake us by their commit.
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            # Recording the outcome failed (database down): the lease expiry retries the row.
            log.error(
                "outbox outcome not recorded",
                exc_info=task.exception(),
                extra={"row": str(row.id) if row else None},
            )

    async def _perform(self, row: ClaimedRow) -> None:
        handler = self._handlers.get(row.topic)
        if handler is None:
            await self._record(row, "dead", error=f"no handler for topic {row.topic!r}")
            return
        deadline = asyncio.timeout(self._options.handler_timeout)
        try:
            async with self._leased(row), deadline:
                recorded = await handler(row)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(row))
            raise
        except GiveUp as error:
            await self._record(row, "dead", error=_describe(error))
        except RetryLater as error:
            await self._retry_or_bury(row, error, delay=error.delay)
        except TimeoutError as error:
            failure: Exception = error
            if deadline.expired():
                # Cancelled mid-way, as a crash would have stopped it: handlers are safe to
                # re-run. (A TimeoutError of the handler's own is an ordinary failure.)
                log.warning(
                    "outbox handler timed out", extra={"topic": row.topic, "row": str(row.id)}
                )
                failure = TimeoutError(f"ran past {self._options.handler_timeout:g} s")
                await self._retry_or_bury(row, failure, delay=None, unfinished=True)
                return
            log.warning("outbox handler failed", extra={"topic": row.topic, "row": str(row.id)})
            await self._retry_or_bury(row, failure, delay=None)
        except Exception as error:
            log.warning("outbox handler failed", extra={"topic": row.topic, "row": str(row.id)})
            await self._retry_or_bury(row, error, delay=None)
        else:
            if recorded is None:
                await self._record(row, "done")
            else:
                self._count(row, recorded.value)

    async def _retry_or_bury(
        self, row: ClaimedRow, error: Exception, *, delay: float | None, unfinished: bool = False
    ) -> None:
        """`unfinished`: the run was cut off, so its handler did not record how it ended."""
        if row.attempts >= self._options.max_attempts:
            await self._record(row, "dead", error=_describe(error), unfinished=unfinished)
            return
        if delay is None:
            delay = self.backoff(row.attempts)
        await self._record(row, "retry", error=_describe(error), delay=delay)
        if delay < self._options.poll_interval * 10:
            # A short retry (a status waiting for its send's answer, say) is claimed when it
            # falls due, not up to a poll interval later.
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        exponent = min(attempts - 1, _MAX_BACKOFF_EXPONENT)
        ceiling = min(self._options.backoff_max, self._options.backoff_base * 2.0**exponent)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrecy

    async def _record(
        self,
        row: ClaimedRow,
        outcome: str,
        *,
        error: str | None = None,
        delay: float = 0.0,
        unfinished: bool = False,
    ) -> None:
        now = utcnow()
        # A row going dead gets its topic's bookkeeping in the same transaction.
        hooks = self._dead_hooks(row.topic, unfinished=unfinished) if outcome == "dead" else []
        async with unit_of_work(self._sessions if hooks else self._statements) as session:
            if outcome == "done":
                kept = await repository.mark_done(session, row, now=now)
            elif outcome == "dead":
                kept = await repository.mark_dead(session, row, error=error or "failed")
                if kept and hooks:
                    await self._bookkeeping(session, row.id, row.topic, row.payload, hooks)
            else:
                at = now + timedelta(seconds=delay)
                kept = await repository.reschedule(session, row, at=at, error=error)
        self._count(row, outcome if kept else "lease_lost")

    def _count(self, row: ClaimedRow, outcome: str) -> None:
        if outcome == "lease_lost":
            # Our lease expired and another worker holds the row now: its outcome counts, and
            # counting ours too would report one row twice.
            log.warning("outbox outcome dropped: lease lost", extra={"row": str(row.id)})
        metrics.OUTBOX_OUTCOMES.labels(topic=row.topic, outcome=outcome).inc()

    async def _release(self, row: ClaimedRow) -> None:
        async with unit_of_work(self._statements) as session:
            await repository.reschedule(session, row, at=utcnow(), error="released at shutdown")

    @contextlib.asynccontextmanager
    async def _leased(self, row: ClaimedRow) -> AsyncIterator[None]:
        """Keep the lease while the handler runs; the heartbeat ends before the outcome is written.

        The heartbeat is told to stop rather than cancelled, so none of its transactions is cut
        halfway, and none overlaps the outcome's.
        """
        over = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lease(row, over))
        try:
            yield
        finally:
            over.set()
            await asyncio.wait([heartbeat])

    async def _keep_lease(self, row: ClaimedRow, over: asyncio.Event) -> None:
        """Extend the lease while a slow handler runs, so no other worker claims it meanwhile."""
        interval = self._options.lease / 3
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), interval)
                return
            until = utcnow() + timedelta(seconds=self._options.lease)
            try:
                async with unit_of_work(self._statements) as session:
                    if not await repository.extend_lease(session, row, until=until):
                        return
            except Exception:
                # A brief database outage: try again next beat, before the lease runs out.
                log.warning("outbox lease not extended", extra={"row": str(row.id)})


def _describe(error: BaseException) -> str:
    """The error for the row's last error, without values: phone numbers masked, and a
    database error's DETAIL lines (PostgreSQL echoes the row there, message text included)
    left out."""
    text = without_value_details(f"{type(error).__name__}: {error}")
    return mask_phones_in_text(text)[:MAX_ERROR_CHARS]
