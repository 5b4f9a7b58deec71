"""The outbox worker in-process: outcomes, retries, leases, shutdown and wake-up."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from invoiceiq.db.engine import SessionFactory, make_engine, make_session_factory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox import repository
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.outbox.service import enqueue
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.worker import (
    GiveUp,
    Handler,
    OnAbandoned,
    Recorded,
    RetryLater,
    Worker,
    WorkerOptions,
    finish,
)

TOPIC = "test.topic"
EVENTUALLY = 5.0  # seconds: generous, only ever reached when something is wrong


def options(**overrides: Any) -> WorkerOptions:
    values: dict[str, Any] = {
        "lease": 2.0,
        "max_attempts": 3,
        "concurrency": 4,
        "poll_interval": 0.05,
        "backoff_base": 0.05,
        "backoff_max": 1.0,
        "stop_grace": 2.0,
    }
    values.update(overrides)
    return WorkerOptions(**values)


async def add(
    sessions: SessionFactory, payload: dict[str, Any] | None = None, *, topic: str = TOPIC
) -> uuid.UUID:
    key = uuid.uuid4().hex
    async with unit_of_work(sessions) as session:
        assert await enqueue(session, topic, payload or {"n": 1}, key)
        row_id = await session.scalar(
            sa.select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)
        )
    assert row_id is not None
    return row_id


async def fetch(sessions: SessionFactory, row_id: uuid.UUID) -> OutboxMessage:
    async with sessions() as session:
        row = await repository.get(session, row_id)
    assert row is not None
    return row


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = EVENTUALLY) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def status_becomes(
    sessions: SessionFactory, row_id: uuid.UUID, *statuses: OutboxStatus
) -> OutboxMessage:
    async def reached() -> bool:
        return (await fetch(sessions, row_id)).status in statuses

    await eventually(reached)
    return await fetch(sessions, row_id)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        await worker.stop()
        await asyncio.wait_for(task, EVENTUALLY)


def recorder(calls: list[dict[str, Any]]) -> Handler:
    async def handle(row: ClaimedRow) -> None:
        calls.append(row.payload)

    return handle


def failing(error: Callable[[int], Exception], calls: list[int]) -> Handler:
    """A handler raising `error(attempt)` on every call, recording each attempt number."""

    async def handle(row: ClaimedRow) -> None:
        calls.append(row.attempts)
        raise error(row.attempts)

    return handle


# Outcomes


async def test_success_marks_the_row_done_after_one_call(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions, {"n": 7, "to": "x"})

    await Worker(sessions, {TOPIC: recorder(calls)}, options()).run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == [{"n": 7, "to": "x"}]
    assert row.status is OutboxStatus.DONE
    assert row.attempts == 1
    assert row.done_at is not None
    assert (row.claim_token, row.locked_until) == (None, None)


async def test_failure_reschedules_with_backoff_and_keeps_the_error(
    sessions: SessionFactory,
) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    before = utcnow()
    worker = Worker(
        sessions,
        {TOPIC: failing(lambda n: RuntimeError(f"boom {n}"), calls)},
        options(backoff_base=60, backoff_max=600),
    )

    await worker.run_until_idle()  # returns: the rescheduled row is not due yet

    row = await fetch(sessions, row_id)
    assert calls == [1]
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.last_error == "RuntimeError: boom 1"
    # First retry: backoff between base/2 and base.
    assert row.available_at >= before + timedelta(seconds=30)
    assert row.available_at <= utcnow() + timedelta(seconds=60)
    assert (row.claim_token, row.locked_until) == (None, None)


async def test_a_handler_that_runs_past_its_timeout_is_cancelled_and_retried(
    sessions: SessionFactory,
) -> None:
    """A call that never ends (a provider trickling its answer) does not hold the row, and
    the chat queued behind it, for ever: the run is cancelled and the row tried again."""
    cancelled: list[int] = []
    calls: list[int] = []

    async def stuck_once(row: ClaimedRow) -> None:
        calls.append(row.attempts)
        if row.attempts == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(row.attempts)
                raise

    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: stuck_once}, options(handler_timeout=0.2, backoff_base=0.05))
    async with running(worker):
        row = await status_becomes(sessions, row_id, OutboxStatus.DONE)

    assert cancelled == [1]
    assert calls == [1, 2]
    assert row.attempts == 2
    assert row.last_error == "TimeoutError: ran past 0.2 s"


async def test_a_timeout_of_the_handlers_own_is_an_ordinary_failure(
    sessions: SessionFactory,
) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    worker = Worker(
        sessions,
        {TOPIC: failing(lambda _: TimeoutError("connect timed out"), calls)},
        options(backoff_base=60),
    )

    await worker.run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == [1]
    assert row.status is OutboxStatus.PENDING
    assert row.last_error == "TimeoutError: connect timed out"


async def test_transient_failure_is_retried_later_and_then_done(sessions: SessionFactory) -> None:
    attempts: list[int] = []

    async def flaky(row: ClaimedRow) -> None:
        attempts.append(row.attempts)
        if row.attempts < 3:
            raise ConnectionError("provider unreachable")

    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: flaky}, options(max_attempts=5, backoff_base=0.2))
    before = utcnow()
    await worker.run_until_idle()
    first = await fetch(sessions, row_id)
    assert first.status is OutboxStatus.PENDING
    assert first.available_at >= before + timedelta(seconds=0.1)  # later, not at once

    async with running(worker):
        row = await status_becomes(sessions, row_id, OutboxStatus.DONE, OutboxStatus.DEAD)

    assert row.status is OutboxStatus.DONE
    assert attempts == [1, 2, 3]
    assert row.attempts == 3


async def test_always_failing_row_ends_dead_with_its_last_error(sessions: SessionFactory) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    worker = Worker(
        sessions, {TOPIC: failing(lambda n: RuntimeError(f"boom {n}"), calls)}, options()
    )

    async with running(worker):
        row = await status_becomes(sessions, row_id, OutboxStatus.DEAD)

    assert calls == [1, 2, 3]
    assert row.attempts == 3
    assert row.last_error == "RuntimeError: boom 3"
    assert (row.claim_token, row.locked_until) == (None, None)


async def test_give_up_is_dead_at_once(sessions: SessionFactory) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: failing(lambda _: GiveUp("rejected: 400"), calls)}, options())

    await worker.run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == [1]
    assert row.status is OutboxStatus.DEAD
    assert row.last_error == "GiveUp: rejected: 400"


async def test_retry_later_delay_is_honoured(sessions: SessionFactory) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    worker = Worker(
        sessions, {TOPIC: failing(lambda _: RetryLater("busy", delay=120), calls)}, options()
    )
    before = utcnow()

    await worker.run_until_idle()

    row = await fetch(sessions, row_id)
    after = utcnow()
    assert row.status is OutboxStatus.PENDING
    assert before + timedelta(seconds=120) <= row.available_at <= after + timedelta(seconds=120)
    assert row.last_error == "RetryLater: busy"


async def test_retry_later_on_the_last_attempt_is_dead(sessions: SessionFactory) -> None:
    calls: list[int] = []
    row_id = await add(sessions)
    worker = Worker(
        sessions,
        {TOPIC: failing(lambda _: RetryLater("busy", delay=0), calls)},
        options(max_attempts=2),
    )

    async with running(worker):
        row = await status_becomes(sessions, row_id, OutboxStatus.DEAD)

    assert calls == [1, 2]
    assert row.last_error == "RetryLater: busy"


async def test_unknown_topic_is_dead_with_the_reason(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions, topic="nobody.handles")

    await Worker(sessions, {TOPIC: recorder(calls)}, options()).run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == []
    assert row.status is OutboxStatus.DEAD
    assert row.last_error is not None
    assert "nobody.handles" in row.last_error


@pytest.mark.parametrize(
    "error",
    [RuntimeError("could not reach 254712345678"), GiveUp("could not reach +254 712 345 678")],
    ids=["retried", "given-up"],
)
async def test_phone_numbers_in_errors_are_masked(
    sessions: SessionFactory, error: Exception
) -> None:
    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: failing(lambda _: error, [])}, options(backoff_base=60))

    await worker.run_until_idle()

    row = await fetch(sessions, row_id)
    assert row.last_error is not None
    assert "2547•••••678" in row.last_error
    assert "345" not in row.last_error


async def test_long_errors_are_cut(sessions: SessionFactory) -> None:
    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: failing(lambda _: GiveUp("x" * 10_000), [])}, options())

    await worker.run_until_idle()

    row = await fetch(sessions, row_id)
    assert row.last_error is not None
    assert 100 < len(row.last_error) <= 2000


async def test_row_enqueued_for_later_waits_until_then(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    async with unit_of_work(sessions) as session:
        await enqueue(
            session, TOPIC, {"n": 1}, "later", not_before=utcnow() + timedelta(seconds=60)
        )
    worker = Worker(sessions, {TOPIC: recorder(calls)}, options())

    await worker.run_until_idle()
    assert calls == []

    async with unit_of_work(sessions) as session:  # once due, it runs
        await enqueue(session, TOPIC, {"n": 2}, "now")
    await worker.run_until_idle()
    assert calls == [{"n": 2}]


# Backoff


def _bare_worker(opts: WorkerOptions) -> Worker:
    # backoff() reads only the options; this factory is never connected.
    return Worker(async_sessionmaker(), {}, opts)


@given(
    attempts=st.integers(min_value=1, max_value=5000),
    base=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=1, max_value=3600),
)
def test_backoff_is_exponential_within_jitter_bounds(
    attempts: int, base: float, cap: float
) -> None:
    worker = _bare_worker(options(backoff_base=base, backoff_max=cap))
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 100))

    delay = worker.backoff(attempts)

    assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_jittered() -> None:
    worker = _bare_worker(options(backoff_base=10, backoff_max=1000))

    delays = {worker.backoff(3) for _ in range(50)}

    assert len(delays) > 1
    assert all(20 <= delay <= 40 for delay in delays)


# Leases


async def _claim_as_another_worker(
    sessions: SessionFactory, *, now: datetime, lease: float, token: str = "other-worker"
) -> ClaimedRow:
    async with unit_of_work(sessions) as session:
        [claimed] = await repository.claim(
            session,
            now=now,
            lease_until=now + timedelta(seconds=lease),
            limit=10,
            token=token,
            max_attempts=100,
        )
    return claimed


async def test_row_whose_lease_expired_is_claimed_again(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions)
    # A worker that claimed the row and died: its lease is already over.
    dead_claim = await _claim_as_another_worker(sessions, now=utcnow(), lease=-1)

    await Worker(sessions, {TOPIC: recorder(calls)}, options()).run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == [{"n": 1}]
    assert row.status is OutboxStatus.DONE
    assert row.attempts == 2
    async with unit_of_work(sessions) as session:  # the dead worker's claim counts no more
        assert not await repository.mark_dead(session, dead_claim, error="late")
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DONE


async def test_row_in_a_live_lease_is_not_claimed(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions)
    await _claim_as_another_worker(sessions, now=utcnow(), lease=60)

    await Worker(sessions, {TOPIC: recorder(calls)}, options()).run_until_idle()

    assert calls == []
    assert (await fetch(sessions, row_id)).status is OutboxStatus.RUNNING


async def test_lease_expired_on_the_last_attempt_is_dead(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions)
    await _claim_as_another_worker(sessions, now=utcnow(), lease=-1)
    last_attempt = options(max_attempts=1, handler_timeout=0.5)

    await Worker(sessions, {TOPIC: recorder(calls)}, last_attempt).run_until_idle()

    row = await fetch(sessions, row_id)
    assert calls == []
    assert row.status is OutboxStatus.DEAD
    assert row.last_error is not None
    assert "lease expired" in row.last_error


async def test_last_attempt_whose_lease_just_ran_out_is_not_run_again_nor_buried_yet(
    sessions: SessionFactory,
) -> None:
    """Its run may still be going (a worker whose heartbeat failed keeps running until the
    handler timeout): nobody runs it again, and it is buried once that run surely ended."""
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions)
    await _claim_as_another_worker(sessions, now=utcnow(), lease=-1)

    await Worker(
        sessions, {TOPIC: recorder(calls)}, options(max_attempts=1, handler_timeout=60)
    ).run_until_idle()

    assert calls == []
    assert (await fetch(sessions, row_id)).status is OutboxStatus.RUNNING
    await Worker(
        sessions, {TOPIC: recorder(calls)}, options(max_attempts=1, handler_timeout=0.5)
    ).run_until_idle()
    assert calls == []
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DEAD


# Bookkeeping of rows abandoned on their last attempt (`on_abandoned`)

BOOKKEEPING = "test.bookkeeping"
# The handler timeout in these tests: a lease that ran out a second ago is past it.
SHORT_TIMEOUT = 0.5


def bookkeeping(calls: list[dict[str, Any]], *, fail_for: int | None = None) -> OnAbandoned:
    """A topic's bookkeeping: writes a row of its own (so a rollback shows), records the call;
    raises after writing for the payload {"n": fail_for}."""

    async def record(session: AsyncSession, payload: dict[str, Any]) -> None:
        calls.append(payload)
        await enqueue(session, BOOKKEEPING, payload, f"kept:{uuid.uuid4().hex}")
        if payload.get("n") == fail_for:
            raise RuntimeError("bookkeeping broke")

    return record


async def kept(sessions: SessionFactory) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.scalars(
            sa.select(OutboxMessage).where(OutboxMessage.topic == BOOKKEEPING)
        )
        return sorted((r.payload for r in rows), key=lambda p: p["n"])


async def abandon_all(sessions: SessionFactory) -> None:
    """A worker that took every due row on its last attempt, then died."""
    now = utcnow()
    async with unit_of_work(sessions) as session:
        assert await repository.claim(
            session,
            now=now,
            lease_until=now - timedelta(seconds=1),
            limit=10,
            token="a-worker-that-died",
            max_attempts=100,
        )


async def test_a_row_abandoned_on_its_last_attempt_gets_its_topics_bookkeeping(
    sessions: SessionFactory,
) -> None:
    """The worker died during the last allowed run: the row goes dead, and its topic records
    what its handler never could, in the transaction that buries it; other topics have none."""
    seen: list[tuple[OutboxStatus | None, OutboxStatus]] = []
    handled: list[dict[str, Any]] = []
    row_id = await add(sessions, {"n": 7})
    other_id = await add(sessions, {"n": 8}, topic="test.other")
    await abandon_all(sessions)

    async def record(session: AsyncSession, payload: dict[str, Any]) -> None:
        # Dead in the burial's own transaction, not yet for anyone else (PostgreSQL: SQLite
        # lets no other session in while a transaction writes).
        ours = await session.scalar(
            sa.select(OutboxMessage.status).where(OutboxMessage.id == row_id)
        )
        theirs = None
        if session.get_bind().dialect.name == "postgresql":
            theirs = (await fetch(sessions, row_id)).status
        seen.append((ours, theirs))

    worker = Worker(
        sessions,
        {TOPIC: recorder(handled), "test.other": recorder(handled)},
        options(max_attempts=1, handler_timeout=SHORT_TIMEOUT),
        on_abandoned={TOPIC: record},
    )

    await worker.run_until_idle()

    assert handled == []
    [(ours, theirs)] = seen
    assert ours is OutboxStatus.DEAD
    assert theirs in {OutboxStatus.RUNNING, None}
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DEAD
    assert (await fetch(sessions, other_id)).status is OutboxStatus.DEAD


async def test_bookkeeping_that_fails_is_undone_for_its_row_only(
    sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A poison row must not run again because its bookkeeping broke too, and rows buried with
    it keep theirs."""
    calls: list[dict[str, Any]] = []
    handled: list[dict[str, Any]] = []
    broken = await add(sessions, {"n": 7})
    fine = await add(sessions, {"n": 8})
    await abandon_all(sessions)
    worker = Worker(
        sessions,
        {TOPIC: recorder(handled)},
        options(max_attempts=1, handler_timeout=SHORT_TIMEOUT),
        on_abandoned={TOPIC: bookkeeping(calls, fail_for=7)},
    )

    await worker.run_until_idle()

    assert handled == []
    assert sorted(c["n"] for c in calls) == [7, 8]
    for row_id in (broken, fine):
        row = await fetch(sessions, row_id)
        assert row.status is OutboxStatus.DEAD
        assert row.last_error is not None and "lease expired" in row.last_error
    assert await kept(sessions) == [{"n": 8}]
    [failure] = [r for r in caplog.records if "bookkeeping of a dead row" in r.message]
    assert failure.__dict__["row"] == str(broken)


@pytest.mark.parametrize("fails", [False, True])
async def test_a_last_run_past_the_timeout_gets_the_bookkeeping(
    sessions: SessionFactory, fails: bool
) -> None:
    """Recorded by the worker that ran it; bookkeeping that fails is undone, and the row goes
    dead all the same (never run again)."""
    calls: list[dict[str, Any]] = []
    runs: list[int] = []

    async def stuck(row: ClaimedRow) -> None:
        runs.append(row.attempts)
        await asyncio.sleep(60)

    row_id = await add(sessions, {"n": 7})
    worker = Worker(
        sessions,
        {TOPIC: stuck},
        options(max_attempts=2, handler_timeout=0.2, backoff_base=0.01, lease=0.5),
        on_abandoned={TOPIC: bookkeeping(calls, fail_for=7 if fails else None)},
    )

    async with running(worker):
        row = await status_becomes(sessions, row_id, OutboxStatus.DEAD)
        await asyncio.sleep(1.0)  # past the lease: nothing claims it again

    assert runs == [1, 2]
    assert row.last_error == "TimeoutError: ran past 0.2 s"
    assert calls == [{"n": 7}]  # the first timeout was retried: no bookkeeping then
    assert await kept(sessions) == ([] if fails else [{"n": 7}])
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DEAD


@pytest.mark.parametrize(
    "error",
    [
        GiveUp("rejected: 400"),
        RuntimeError("boom"),
        TimeoutError("connect timed out"),
        RetryLater("busy"),
    ],
)
async def test_a_handler_that_ended_its_last_run_gets_no_abandoned_bookkeeping(
    sessions: SessionFactory, error: Exception
) -> None:
    """Its handler saw how the run ended and did its own bookkeeping (`Sender`): not twice."""
    calls: list[dict[str, Any]] = []
    row_id = await add(sessions)
    worker = Worker(
        sessions,
        {TOPIC: failing(lambda _: error, [])},
        options(max_attempts=1),
        on_abandoned={TOPIC: bookkeeping(calls)},
    )

    await worker.run_until_idle()

    assert (await fetch(sessions, row_id)).status is OutboxStatus.DEAD
    assert calls == []


@pytest.mark.parametrize("abandoned", [False, True], ids=["retries used up", "abandoned"])
async def test_every_row_going_dead_gets_its_topics_on_dead_bookkeeping(
    sessions: SessionFactory, abandoned: bool
) -> None:
    """However it died: its handler failed its last run, or nobody saw the end of it (then the
    abandoned bookkeeping runs as well); other topics have none."""
    dead_calls: list[dict[str, Any]] = []
    abandoned_calls: list[dict[str, Any]] = []
    row_id = await add(sessions, {"n": 7})
    other_id = await add(sessions, {"n": 8}, topic="test.other")
    if abandoned:
        await abandon_all(sessions)
    fail = failing(lambda _: RuntimeError("boom"), [])
    worker = Worker(
        sessions,
        {TOPIC: fail, "test.other": fail},
        options(max_attempts=1, handler_timeout=SHORT_TIMEOUT),
        on_abandoned={TOPIC: bookkeeping(abandoned_calls)},
        on_dead={TOPIC: bookkeeping(dead_calls)},
    )

    await worker.run_until_idle()

    for dead in (row_id, other_id):
        assert (await fetch(sessions, dead)).status is OutboxStatus.DEAD
    assert dead_calls == [{"n": 7}]
    assert abandoned_calls == ([{"n": 7}] if abandoned else [])
    assert len(await kept(sessions)) == (2 if abandoned else 1)


# Sweeps


async def test_a_sweeps_rows_are_claimed_in_the_same_pass(sessions: SessionFactory) -> None:
    calls: list[dict[str, Any]] = []

    async def queue_one(session: AsyncSession, now: datetime) -> int:
        return int(await enqueue(session, TOPIC, {"swept": now.isoformat()}, "swept"))

    worker = Worker(sessions, {TOPIC: recorder(calls)}, options(), sweeps=[queue_one])

    await worker.run_until_idle()
    await worker.run_until_idle()  # within the interval: not swept again

    assert len(calls) == 1 and "swept" in calls[0]


async def test_a_sweep_runs_again_once_its_interval_has_passed(sessions: SessionFactory) -> None:
    swept: list[datetime] = []

    async def note(session: AsyncSession, now: datetime) -> int:
        swept.append(now)
        return 0

    worker = Worker(sessions, {}, options(sweep_interval=0.1), sweeps=[note])
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _true(len(swept) >= 3))
    finally:
        await worker.stop()
        await task

    assert swept == sorted(swept) and swept[-1] - swept[0] >= timedelta(seconds=0.2)


async def test_sweeps_run_while_every_slot_is_busy(sessions: SessionFactory) -> None:
    release = asyncio.Event()
    swept: list[datetime] = []
    await add(sessions)

    async def busy(row: ClaimedRow) -> None:
        await release.wait()

    async def note(session: AsyncSession, now: datetime) -> int:
        swept.append(now)
        return 0

    worker = Worker(
        sessions, {TOPIC: busy}, options(concurrency=1, sweep_interval=0.1), sweeps=[note]
    )
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _true(len(swept) >= 3))
    finally:
        release.set()
        await worker.stop()
        await task


async def test_a_failing_sweep_keeps_none_of_its_work_and_stops_nothing(
    sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dict[str, Any]] = []
    await add(sessions, {"n": 7})

    async def half_done(session: AsyncSession, now: datetime) -> int:
        await enqueue(session, TOPIC, {"n": "half"}, "half")
        raise RuntimeError("the sweep broke")

    async def fine(session: AsyncSession, now: datetime) -> int:
        return int(await enqueue(session, TOPIC, {"n": "fine"}, "fine"))

    worker = Worker(sessions, {TOPIC: recorder(calls)}, options(), sweeps=[half_done, fine])
    await worker.run_until_idle()

    assert sorted(str(call["n"]) for call in calls) == ["7", "fine"]
    assert "outbox sweep failed" in caplog.text


async def _true(value: bool) -> bool:
    return value


async def test_outcome_of_a_worker_whose_lease_was_taken_over_is_dropped(
    sessions: SessionFactory,
) -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def slow(row: ClaimedRow) -> None:
        calls.append(row.attempts)
        started.set()
        await finish.wait()

    row_id = await add(sessions)
    # A long lease, so this worker's heartbeat does not renew it during the test.
    worker = Worker(sessions, {TOPIC: slow}, options(lease=60))
    drained = asyncio.create_task(worker.run_until_idle())
    await asyncio.wait_for(started.wait(), EVENTUALLY)

    # Another worker whose clock says the lease is over takes the row.
    later = utcnow() + timedelta(seconds=120)
    takeover = await _claim_as_another_worker(sessions, now=later, lease=60)
    finish.set()
    await asyncio.wait_for(drained, EVENTUALLY)

    row = await fetch(sessions, row_id)
    assert calls == [1]
    assert row.status is OutboxStatus.RUNNING  # the first worker's "done" was dropped
    assert row.claim_token == takeover.claim_token
    async with unit_of_work(sessions) as session:
        assert await repository.mark_dead(session, takeover, error="the new claimant decides")
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DEAD


async def test_heartbeat_keeps_a_slow_handler_from_being_claimed_twice(
    sessions: SessionFactory,
) -> None:
    calls: list[int] = []

    async def slow(row: ClaimedRow) -> None:
        calls.append(row.attempts)
        await asyncio.sleep(2.5)  # longer than two leases

    row_id = await add(sessions)
    first = Worker(sessions, {TOPIC: slow}, options(lease=1.0))
    second = Worker(sessions, {TOPIC: slow}, options(lease=1.0))

    async with running(first), running(second):
        row = await status_becomes(sessions, row_id, OutboxStatus.DONE)

    assert calls == [1]
    assert row.attempts == 1


async def test_two_workers_perform_each_row_once(sessions: SessionFactory) -> None:
    seen: list[int] = []

    async def handle(row: ClaimedRow) -> None:
        await asyncio.sleep(0.01)  # let the other worker claim meanwhile
        seen.append(row.payload["n"])

    async with unit_of_work(sessions) as session:
        for n in range(60):
            await enqueue(session, TOPIC, {"n": n})
    workers = [Worker(sessions, {TOPIC: handle}, options(concurrency=5)) for _ in range(2)]

    async def all_done() -> bool:
        async with sessions() as session:
            counts = await repository.count_by_status(session)
        return counts[OutboxStatus.DONE] == 60

    async with running(workers[0]), running(workers[1]):
        await eventually(all_done, timeout=20)

    assert sorted(seen) == list(range(60))


# Shutdown


async def test_stop_lets_a_handler_in_hand_finish_within_the_grace(
    sessions: SessionFactory,
) -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def slow(row: ClaimedRow) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(row.payload["n"])

    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: slow}, options(stop_grace=5))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), EVENTUALLY)

    await worker.stop()
    await asyncio.wait_for(task, EVENTUALLY)

    assert finished == [1]
    assert (await fetch(sessions, row_id)).status is OutboxStatus.DONE


async def test_stop_releases_a_handler_longer_than_the_grace(sessions: SessionFactory) -> None:
    started = asyncio.Event()
    cancelled: list[int] = []

    async def endless(row: ClaimedRow) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(row.payload["n"])
            raise

    row_id = await add(sessions)
    worker = Worker(sessions, {TOPIC: endless}, options(stop_grace=0.2))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), EVENTUALLY)

    await asyncio.wait_for(worker.stop(), EVENTUALLY)
    await asyncio.wait_for(task, EVENTUALLY)

    row = await fetch(sessions, row_id)
    assert cancelled == [1]
    assert row.status is OutboxStatus.PENDING  # neither lost in "running" nor dead
    assert (row.claim_token, row.locked_until) == (None, None)
    assert row.available_at <= utcnow()  # due again at once, for the next worker


class _CountingSessions:
    """A session factory that says when the worker opens a transaction."""

    def __init__(self, inner: SessionFactory) -> None:
        self._inner = inner
        self.opened = asyncio.Event()

    def __call__(self) -> AsyncSession:
        self.opened.set()
        return self._inner()


@asynccontextmanager
async def _writes_blocked(sessions: SessionFactory, db_kind: str) -> AsyncIterator[None]:
    """Hold the outbox table so that a worker's claim waits until the block ends."""
    async with unit_of_work(sessions) as session:
        if db_kind == "postgresql":
            await session.execute(sa.text("LOCK TABLE outbox_message IN EXCLUSIVE MODE"))
        else:
            await session.execute(sa.select(1))  # BEGIN IMMEDIATE: SQLite's one write lock
        yield


async def test_stop_during_a_claim_does_not_leave_its_rows_behind(
    sessions: SessionFactory, db_kind: str
) -> None:
    finished: list[int] = []

    async def slow(row: ClaimedRow) -> None:
        await asyncio.sleep(0.5)
        finished.append(row.payload["n"])

    row_id = await add(sessions)
    counting = _CountingSessions(sessions)
    worker = Worker(cast(SessionFactory, counting), {TOPIC: slow}, options(stop_grace=5))
    async with _writes_blocked(sessions, db_kind):
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(counting.opened.wait(), EVENTUALLY)  # the claim is under way
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0.05)  # stop() has begun while the claim waits for the lock
    await asyncio.wait_for(stopping, EVENTUALLY)
    await asyncio.wait_for(task, EVENTUALLY)

    # Whatever the claim took was finished (or released) before stop() returned.
    row = await fetch(sessions, row_id)
    assert row.status in {OutboxStatus.DONE, OutboxStatus.PENDING}
    assert finished == ([1] if row.status is OutboxStatus.DONE else [])


# Wake-up


async def test_commit_that_enqueues_wakes_the_worker_at_once(engine: AsyncEngine) -> None:
    handled = asyncio.Event()

    async def handle(row: ClaimedRow) -> None:
        handled.set()

    box: list[Worker] = []
    sessions = make_session_factory(engine, on_outbox_commit=lambda: box[0].wake())
    counting = _CountingSessions(sessions)
    worker = Worker(cast(SessionFactory, counting), {TOPIC: handle}, options(poll_interval=30))
    box.append(worker)

    async with running(worker):
        await asyncio.wait_for(counting.opened.wait(), EVENTUALLY)
        await asyncio.sleep(0.3)  # the first (empty) claim is over: the worker now sleeps 30 s
        await add(sessions)
        await asyncio.wait_for(handled.wait(), EVENTUALLY)


# A handler that records its own outcome (`finish`) in its last transaction


async def test_finish_marks_done_with_the_handlers_effects_in_one_commit(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    row_id = await add(sessions)
    effect_key = uuid.uuid4().hex
    commits: list[int] = []

    async def handle(row: ClaimedRow) -> Recorded | None:
        async with unit_of_work(sessions) as session:
            later = utcnow() + timedelta(hours=1)  # not due: the drain below ignores it
            await enqueue(session, "test.effect", {"of": str(row.id)}, effect_key, not_before=later)
            return await finish(session, row)

    def count(_connection: Any) -> None:
        commits.append(1)

    sa.event.listen(engine.sync_engine, "commit", count)
    try:
        # One look for abandoned rows in this run (the poll interval is long).
        await Worker(sessions, {TOPIC: handle}, options(poll_interval=60)).run_until_idle()
    finally:
        sa.event.remove(engine.sync_engine, "commit", count)

    row = await fetch(sessions, row_id)
    assert row.status is OutboxStatus.DONE
    assert (row.claim_token, row.locked_until) == (None, None)
    async with sessions() as session:
        effect = await session.scalar(
            sa.select(OutboxMessage).where(OutboxMessage.dedupe_key == effect_key)
        )
    assert effect is not None and effect.status is OutboxStatus.PENDING
    # The look for abandoned rows, the claim, then the handler's one transaction; no separate
    # "done" commit (the final claim that finds nothing commits too).
    assert len(commits) == 4


async def test_finish_after_the_lease_was_taken_over_keeps_the_effects_not_the_outcome(
    sessions: SessionFactory,
) -> None:
    row_id = await add(sessions)
    effect_key = uuid.uuid4().hex
    outcomes: list[Recorded] = []
    takeovers: list[ClaimedRow] = []

    async def handle(row: ClaimedRow) -> Recorded | None:
        later = utcnow() + timedelta(seconds=120)
        takeovers.append(await _claim_as_another_worker(sessions, now=later, lease=60))
        async with unit_of_work(sessions) as session:
            await enqueue(session, "test.effect", {"of": str(row.id)}, effect_key)
            outcomes.append(await finish(session, row))
            return outcomes[-1]

    await Worker(sessions, {TOPIC: handle}, options(lease=60)).run_until_idle()

    assert outcomes == [Recorded.LEASE_LOST]
    row = await fetch(sessions, row_id)
    assert row.status is OutboxStatus.RUNNING  # the new claimant decides
    assert row.claim_token == takeovers[0].claim_token
    async with sessions() as session:
        assert await session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.dedupe_key == effect_key)
        )


async def test_the_next_row_of_an_ordering_key_runs_as_soon_as_the_one_before_is_done(
    sessions: SessionFactory,
) -> None:
    order: list[int] = []

    async def handle(row: ClaimedRow) -> None:
        order.append(row.payload["n"])  # nothing enqueued: no commit wakes the worker

    async with unit_of_work(sessions) as session:
        for n in range(5):
            await enqueue(session, TOPIC, {"n": n}, ordering_key="chat-1")
    # A poll far longer than the test may take: each next row must be claimed without it.
    worker = Worker(sessions, {TOPIC: handle}, options(poll_interval=30))
    async with running(worker):
        await eventually(lambda: _async_true(len(order) == 5), timeout=EVENTUALLY)
    assert order == [0, 1, 2, 3, 4]


async def _async_true(value: bool) -> bool:
    return value


async def test_a_short_retry_runs_when_it_falls_due_not_at_the_next_poll(
    sessions: SessionFactory,
) -> None:
    calls: list[float] = []

    async def handle(row: ClaimedRow) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise RetryLater("not yet", delay=0.3)

    await add(sessions)
    # A poll far longer than the test may take: the retry must come from its own timer.
    worker = Worker(sessions, {TOPIC: handle}, options(poll_interval=30))
    async with running(worker):
        await eventually(lambda: _async_true(len(calls) == 2), timeout=EVENTUALLY)
    assert calls[1] - calls[0] >= 0.3


async def test_claims_failing_for_a_while_are_logged_once_with_their_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database down: one stack, then a line a minute, not a stack every poll."""
    missing = make_engine(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/db.sqlite")
    sessions = make_session_factory(missing)
    worker = Worker(sessions, {TOPIC: recorder([])}, options(poll_interval=0.01))
    try:
        with caplog.at_level(logging.WARNING, logger="invoiceiq.worker"):
            async with running(worker):
                await asyncio.sleep(0.4)  # dozens of polls, every claim failing
    finally:
        await missing.dispose()
    assert [record.getMessage() for record in caplog.records] == ["outbox claim failed"]
    assert caplog.records[0].exc_info is not None
