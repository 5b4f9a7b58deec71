"""The application factory: wires settings, database, worker and routers once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from invoiceiq.config import Settings
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.error_handlers import install_error_handlers
from invoiceiq.handlers import outbox_handlers
from invoiceiq.ops.middleware import RequestContextMiddleware
from invoiceiq.ops.router import router as ops_router
from invoiceiq.worker import Worker, WorkerOptions

log = logging.getLogger(__name__)


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(lease=settings.outbox_lease, max_attempts=settings.outbox_max_attempts)


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> FastAPI:
    """Build the app. `run_worker=False` is `serve --no-worker`: other processes drain the outbox."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        worker_box: list[Worker] = []

        def wake() -> None:
            if worker_box:
                worker_box[0].wake()

        sessions = make_session_factory(engine, on_outbox_commit=wake)
        app.state.engine, app.state.sessions = engine, sessions
        worker_task = None
        if run_worker:
            worker = Worker(sessions, outbox_handlers(settings, sessions), worker_options(settings))
            worker_box.append(worker)
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run(), name="outbox-worker")
        try:
            yield
        finally:
            if worker_task is not None:
                await worker_box[0].stop()
                await worker_task
            await engine.dispose()

    app = FastAPI(
        title="InvoiceIQ",
        summary="Invoice a customer from WhatsApp and get paid by M-PESA.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.include_router(ops_router)
    return app
