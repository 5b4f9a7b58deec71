"""A real outbox worker process for the process tests: `python tests/support/worker_proc.py`.

It builds the product's Worker with the product's engine, session factory and options, and stops
on SIGTERM/SIGINT the way `invoiceiq.cli._run_worker` does; only the handlers are the test's.

Environment:
  DATABASE_URL        the (already migrated) database
  OUTBOX_LEASE        lease in seconds, read through Settings as in production
  WORKER_OUTPUT       file each performed row is appended to as "<n> <pid>"
  WORKER_READY        file the worker appends "<pid>" to once it runs (optional)
  WORKER_MODE         record (default) | hang: write "hang <n> <pid>", then never return
  WORKER_HANDLER_SECONDS  how long a record handler takes (default 0)
  WORKER_STOP_GRACE   seconds SIGTERM waits for handlers in hand (default: the product's)
  WORKER_POLL         poll interval in seconds (default 0.2)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

from invoiceiq.config import Settings
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.handlers import worker_options
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.worker import Handler, Worker, WorkerOptions

TOPIC = "test.record"


def _append(path: str, line: str) -> None:
    # One O_APPEND write per line: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _handler() -> Handler:
    output = os.environ["WORKER_OUTPUT"]
    mode = os.environ.get("WORKER_MODE", "record")
    seconds = float(os.environ.get("WORKER_HANDLER_SECONDS", "0"))
    pid = os.getpid()

    async def record(row: ClaimedRow) -> None:
        n = row.payload["n"]
        if mode == "hang":
            _append(output, f"hang {n} {pid}\n")
            await asyncio.Event().wait()
        if seconds:
            await asyncio.sleep(seconds)
        _append(output, f"{n} {pid}\n")

    return record


def _options(settings: Settings) -> WorkerOptions:
    options = dataclasses.replace(
        worker_options(settings), poll_interval=float(os.environ.get("WORKER_POLL", "0.2"))
    )
    grace = os.environ.get("WORKER_STOP_GRACE")
    return dataclasses.replace(options, stop_grace=float(grace)) if grace else options


async def main() -> None:
    settings = Settings(_env_file=None)
    engine = make_engine(settings.database_url)
    worker = Worker(make_session_factory(engine), {TOPIC: _handler()}, _options(settings))
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.append(loop.create_task(worker.stop())))
    ready = os.environ.get("WORKER_READY")
    if ready:
        _append(ready, f"{os.getpid()}\n")
    try:
        await worker.run()
        if stopping:
            await asyncio.gather(*stopping)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
