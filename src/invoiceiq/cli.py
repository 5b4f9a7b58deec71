"""The `invoiceiq` command line (DESIGN §1)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
import uvicorn
from pydantic import ValidationError

from invoiceiq.config import ConfigError, Settings
from invoiceiq.db import migrate
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.handlers import outbox_handlers
from invoiceiq.main import create_app, worker_options
from invoiceiq.ops.logging import configure_logging
from invoiceiq.worker import Worker

T = TypeVar("T")

app = typer.Typer(help="InvoiceIQ: invoice from WhatsApp, get paid by M-PESA.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def load_settings() -> Settings:
    """Settings from the environment and .env; a clear message instead of a traceback."""
    try:
        return Settings()
    except (ConfigError, ValidationError) as error:
        typer.echo(f"Configuration error: {error}", err=True)
        raise typer.Exit(code=2) from None


def run(coroutine_factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coroutine_factory()

    return asyncio.run(main())


async def _upgrade(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (safe to run from several processes at once on PostgreSQL)."""
    settings = load_settings()
    configure_logging()
    run(lambda: _upgrade(settings))
    typer.echo("database is at the latest migration")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Leave the outbox to `invoiceiq worker` processes.")
    ] = False,
) -> None:
    """Migrate, then serve the web app (with an in-process worker unless --no-worker)."""
    settings = load_settings()
    configure_logging()
    run(lambda: _upgrade(settings))
    application = create_app(settings, run_worker=not no_worker)
    config = uvicorn.Config(application, host=host, port=port, log_config=None, access_log=False)
    uvicorn.Server(config).run()


@app.command()
def worker() -> None:
    """Migrate, then drain the outbox until SIGTERM or SIGINT."""
    settings = load_settings()
    configure_logging()
    run(lambda: _run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    await _upgrade(settings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    outbox_worker = Worker(sessions, outbox_handlers(settings, sessions), worker_options(settings))
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.append(loop.create_task(outbox_worker.stop())))
    try:
        await outbox_worker.run()
        if stopping:
            await asyncio.gather(*stopping)
    finally:
        await engine.dispose()


def main() -> None:
    app(prog_name="invoiceiq")


if __name__ == "__main__":
    sys.exit(main())
