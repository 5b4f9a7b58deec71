"""Real worker processes on PostgreSQL: exactly once when all goes well, again after a death.

Each worker is `tests/support/worker_proc.py`: the product's Worker, engine and options with a
handler that appends "<n> <pid>" to a shared file, so the file says who performed what.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.outbox import repository
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.service import enqueue
from invoiceiq.outbox.states import OutboxStatus

pytestmark = pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)

SCRIPT = Path(__file__).parents[1] / "support" / "worker_proc.py"
TOPIC = "test.record"
STARTUP = 30.0  # seconds for a process to import and start: generous for a loaded CI machine


class Workers:
    """Starts worker processes and kills whatever is left of them when the test ends."""

    def __init__(self, database_url: str, directory: Path) -> None:
        self.database_url = database_url
        self.output = directory / "performed.txt"
        self.ready = directory / "ready.txt"
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "WORKER_OUTPUT": str(self.output),
            "WORKER_READY": str(self.ready),
            **env,
        }
        process = subprocess.Popen([sys.executable, str(SCRIPT)], env=environment)
        self._processes.append(process)
        return process

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def performed(self) -> list[tuple[int, int]]:
        """(n, pid) of every row a handler completed."""
        return [
            (int(n), int(pid))
            for n, pid in (line.split() for line in self.lines() if not line.startswith("hang"))
        ]

    def ready_pids(self) -> set[int]:
        return (
            {int(pid) for pid in self.ready.read_text().split()} if self.ready.exists() else set()
        )

    def kill_all(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(database_url, tmp_path)
    yield started
    started.kill_all()  # before the database is emptied for the next test


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            outcome = check()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(0.1)


async def wait_exit(process: subprocess.Popen[bytes], timeout: float = STARTUP) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, f"worker {process.pid} did not exit"
        await asyncio.sleep(0.05)
    return process.returncode


async def add_rows(sessions: SessionFactory, numbers: range) -> None:
    async with unit_of_work(sessions) as session:
        for n in numbers:
            await enqueue(session, TOPIC, {"n": n}, f"record-{n}")


async def counts(sessions: SessionFactory) -> dict[OutboxStatus, int]:
    async with sessions() as session:
        return await repository.count_by_status(session)


async def the_row(sessions: SessionFactory) -> OutboxMessage:
    async with sessions() as session:
        [row] = (await session.scalars(sa.select(OutboxMessage))).all()
    return row


async def test_two_processes_drain_500_rows_each_exactly_once(
    sessions: SessionFactory, workers: Workers
) -> None:
    first = workers.start(WORKER_HANDLER_SECONDS="0.002")
    second = workers.start(WORKER_HANDLER_SECONDS="0.002")
    # Both running before any row exists, so both get a share.
    await eventually(lambda: workers.ready_pids() == {first.pid, second.pid}, STARTUP)

    await add_rows(sessions, range(500))

    async def drained() -> bool:
        return (await counts(sessions))[OutboxStatus.DONE] == 500

    await eventually(drained, timeout=120)
    for process in (first, second):
        process.send_signal(signal.SIGTERM)
    assert [await wait_exit(first), await wait_exit(second)] == [0, 0]

    performed = workers.performed()
    by_row = Counter(n for n, _ in performed)
    by_pid = Counter(pid for _, pid in performed)
    print(f"rows per worker: {dict(by_pid)}")
    assert sorted(by_row) == list(range(500))
    assert [n for n, times in by_row.items() if times > 1] == []
    assert set(by_pid) == {first.pid, second.pid}
    async with sessions() as session:
        attempts = await session.scalars(sa.select(OutboxMessage.attempts).distinct())
        assert list(attempts) == [1]


async def test_row_of_a_killed_worker_is_claimed_again_after_its_lease(
    sessions: SessionFactory, workers: Workers
) -> None:
    await add_rows(sessions, range(1))
    hung = workers.start(WORKER_MODE="hang", OUTBOX_LEASE="1")
    await eventually(lambda: f"hang 0 {hung.pid}" in workers.lines(), STARTUP)

    hung.send_signal(signal.SIGKILL)
    await wait_exit(hung)
    row = await the_row(sessions)
    assert row.status is OutboxStatus.RUNNING  # nobody released it: only the lease can
    assert row.attempts == 1

    rescuer = workers.start(OUTBOX_LEASE="1")

    async def done() -> bool:
        return (await the_row(sessions)).status is OutboxStatus.DONE

    await eventually(done, STARTUP)
    assert workers.performed() == [(0, rescuer.pid)]
    assert (await the_row(sessions)).attempts == 2


@pytest.mark.parametrize(
    ("handler_seconds", "grace", "outcome"),
    [("30", "0.5", OutboxStatus.PENDING), ("1", "20", OutboxStatus.DONE)],
    ids=["released", "finished"],
)
async def test_sigterm_mid_handler_finishes_or_releases_the_row(
    sessions: SessionFactory,
    workers: Workers,
    handler_seconds: str,
    grace: str,
    outcome: OutboxStatus,
) -> None:
    await add_rows(sessions, range(1))
    worker = workers.start(WORKER_HANDLER_SECONDS=handler_seconds, WORKER_STOP_GRACE=grace)

    async def in_hand() -> bool:
        return (await the_row(sessions)).status is OutboxStatus.RUNNING

    await eventually(in_hand, STARTUP)
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker) == 0

    row = await the_row(sessions)
    assert row.status is outcome
    assert (row.claim_token, row.locked_until) == (None, None)
    if outcome is OutboxStatus.DONE:
        assert workers.performed() == [(0, worker.pid)]
        return

    # Released, not lost: the next worker performs it at once (no lease to wait out).
    assert workers.performed() == []
    successor = workers.start()

    async def done() -> bool:
        return (await the_row(sessions)).status is OutboxStatus.DONE

    await eventually(done, STARTUP)
    assert workers.performed() == [(0, successor.pid)]
