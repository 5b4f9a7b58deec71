"""The application factory: wires settings, database, worker and routers once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from invoiceiq.api.router import install as install_api
from invoiceiq.config import Settings
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.error_handlers import install_error_handlers
from invoiceiq.handlers import outbox_worker
from invoiceiq.inbox.writer import InboxWriter
from invoiceiq.mpesa.callbacks import router as mpesa_router
from invoiceiq.ops.hot_routes import App
from invoiceiq.ops.middleware import RequestContextMiddleware
from invoiceiq.ops.router import router as ops_router
from invoiceiq.providers import make_providers
from invoiceiq.simulator.app import create_simulator, mount_simulator, register_app_webhook
from invoiceiq.web.pages import install as install_web
from invoiceiq.whatsapp.callbacks import apply_statuses_now
from invoiceiq.whatsapp.callbacks import receive as receive_webhook
from invoiceiq.whatsapp.callbacks import router as whatsapp_router
from invoiceiq.worker import Worker

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    run_worker: bool = True,
    local_origin: str = "http://127.0.0.1:8000",
) -> FastAPI:
    """Build the app; `run_worker=False` is `serve --no-worker` (other processes drain the outbox).

    The engine, session factory and worker are made in the lifespan, so building the app does
    no I/O and tests can add routes before starting it. `local_origin` is where this process
    listens: with the simulator on and no provider URLs set, the clients talk to it there.
    """
    settings = settings or Settings()
    simulator = create_simulator(settings) if settings.simulator_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        worker_box: list[Worker] = []

        def wake() -> None:
            if worker_box:
                worker_box[0].wake()

        sessions = make_session_factory(engine, on_outbox_commit=wake)
        providers = make_providers(settings, local_origin=local_origin, sessions=sessions)
        app.state.engine, app.state.sessions = engine, sessions
        app.state.providers = providers
        inbox_writer = InboxWriter(sessions, apply_now=apply_statuses_now)
        inbox_writer.start()
        app.state.inbox_writer = inbox_writer
        if simulator is not None:
            register_app_webhook(
                simulator,
                local_origin=local_origin,
                secret=settings.whatsapp_webhook_secret.get_secret_value(),
            )
        worker_task = None
        if run_worker:
            worker = outbox_worker(settings, sessions, providers)
            worker_box.append(worker)
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run(), name="outbox-worker")
        try:
            yield
        finally:
            try:
                await inbox_writer.stop()
                if worker_task is not None:
                    await worker_box[0].stop()
                    await worker_task
            finally:
                await providers.aclose()
                if simulator is not None:
                    await simulator.aclose()
                await engine.dispose()

    app = App(
        title="InvoiceIQ",
        summary="Invoice a customer from WhatsApp and get paid by M-PESA.",
        version="0.1.0",
        lifespan=lifespan,
        # /docs is served by invoiceiq.api.router from files in a wheel, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.include_router(whatsapp_router)  # first: the webhook is the busiest route
    app.add_hot_route("POST", "/whatsapp/webhook", receive_webhook)
    app.include_router(ops_router)
    app.include_router(mpesa_router)
    install_api(app)
    install_web(app)
    if simulator is not None:
        app.state.simulator = simulator
        mount_simulator(app, simulator)
    return app
