"""The `invoiceiq` command line (DESIGN §1)."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import sqlalchemy as sa
import typer
import uvicorn
from pydantic import ValidationError
from starlette.types import ASGIApp

from invoiceiq.admin_cli import merchant_app, whatsapp_app
from invoiceiq.config import Settings, describe_settings_error
from invoiceiq.db import migrate
from invoiceiq.db.engine import (
    DatabaseUnreachable,
    check_connection,
    make_engine,
    make_session_factory,
)
from invoiceiq.handlers import outbox_worker as make_outbox_worker
from invoiceiq.main import create_app
from invoiceiq.ops.logging import configure_logging
from invoiceiq.outbox.cli import outbox_app
from invoiceiq.outbox.listener import listen_for_new_rows
from invoiceiq.payments.cli import payments_app
from invoiceiq.providers import make_providers
from invoiceiq.simulator.cli import simulator as simulator_command

T = TypeVar("T")
log = logging.getLogger(__name__)

app = typer.Typer(
    help="InvoiceIQ: invoice from WhatsApp, get paid by M-PESA.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(merchant_app, name="merchant")
app.add_typer(whatsapp_app, name="whatsapp")
app.add_typer(outbox_app, name="outbox")
app.add_typer(payments_app, name="payments")
app.command("simulator")(simulator_command)


def load_settings() -> Settings:
    """Settings from the environment and .env; a clear message instead of a traceback."""
    try:
        return Settings()
    except ValidationError as error:
        typer.echo(describe_settings_error(error), err=True)
        raise typer.Exit(code=2) from None


def run(coroutine_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; an unreachable database is a message and exit code 1, not a traceback."""

    async def main() -> T:
        return await coroutine_factory()

    try:
        return asyncio.run(main())
    except DatabaseUnreachable as error:
        typer.echo(f"Database error: {error}", err=True)
        raise typer.Exit(code=1) from None


async def _upgrade(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        await check_connection(engine)
        if await migrate.migration_state(engine) == "ahead":
            where = sa.make_url(settings.database_url).render_as_string(hide_password=True)
            raise DatabaseUnreachable(
                f"the database at {where} was migrated by a newer InvoiceIQ, which this "
                "release cannot run on; deploy that release again, or a fix on top of it"
            )
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
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Leave the outbox to `invoiceiq worker` processes.")
    ] = False,
) -> None:
    """Migrate, then serve the web app (with an in-process worker unless --no-worker)."""
    settings = load_settings()
    configure_logging()
    run(lambda: _upgrade(settings))
    application = create_app(
        settings, run_worker=not no_worker, local_origin=local_origin(host, port)
    )
    freeze_startup_objects()
    uvicorn.Server(uvicorn_config(application, settings, host=host, port=port)).run()


def local_origin(host: str, port: int) -> str:
    """Where this process reaches itself (its simulator, its own webhooks): the address it
    listens on, or loopback when it listens on every address."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - recognised, not bound to
        host = "127.0.0.1"
    elif host == "::":  # every IPv6 address: its loopback, whether or not IPv4 maps in
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, classes, the app) out of the garbage collector's
    sight: they live as long as the process, and a full collection would otherwise walk them
    all again and again, pausing every request in flight for tens of milliseconds."""
    gc.collect()
    gc.freeze()


def uvicorn_config(
    application: ASGIApp, settings: Settings, *, host: str, port: int
) -> uvicorn.Config:
    """Logging is ours (JSON, masked); X-Forwarded-* is believed from TRUSTED_PROXIES only.

    Left to itself uvicorn trusts 127.0.0.1 (or $FORWARDED_ALLOW_IPS), so any local process
    could pick the client address the rate limits see (DESIGN §7).
    """
    trusted = settings.trusted_proxies
    return uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=list(trusted) if trusted else [],
    )


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
    # A separate worker has no server of its own: provider URLs must point somewhere real, or at
    # a standalone simulator (`invoiceiq simulator`) through WHATSAPP_API_URL / MPESA_API_URL.
    providers = make_providers(settings, local_origin=settings.base_url, sessions=sessions)
    outbox_worker = make_outbox_worker(settings, sessions, providers)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig, lambda: stopping.append(loop.create_task(outbox_worker.stop()))
        )
    # Rows that `serve` (or another worker) commits wake this worker through PostgreSQL.
    listener = asyncio.create_task(listen_for_new_rows(engine, outbox_worker.wake))
    freeze_startup_objects()
    log.info("worker started")
    try:
        await outbox_worker.run()
        if stopping:
            await asyncio.gather(*stopping)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await providers.aclose()
        await engine.dispose()
    log.info("worker stopped")


# The benchmarks live beside the package in a clone (src/invoiceiq → the repository's bench/).
REPOSITORY = Path(__file__).resolve().parents[2]


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(context: typer.Context) -> None:
    """The load and end-to-end benchmarks (README, Performance), as `make bench` runs them;
    options pass through (`invoiceiq bench --help`). From a clone of the repository only."""
    if not (REPOSITORY / "bench" / "__main__.py").is_file():
        typer.echo(
            "The benchmarks come with the source, not the installed package: run "
            "`make bench` from a clone of the repository.",
            err=True,
        )
        raise typer.Exit(code=2)
    # Our own scripts, and the operator's own options passed on as argv (no shell).
    if "--help" not in context.args and "-h" not in context.args:
        prepare = [shutil.which("bash") or "/bin/bash", str(REPOSITORY / "bench" / "prepare.sh")]
        prepared = subprocess.run(prepare, check=False)  # noqa: S603
        if prepared.returncode != 0:
            raise typer.Exit(code=prepared.returncode)
    command = [sys.executable, "-m", "bench", *context.args]
    ran = subprocess.run(command, cwd=REPOSITORY, check=False)  # noqa: S603
    raise typer.Exit(code=ran.returncode)


def main() -> None:
    app(prog_name="invoiceiq")


if __name__ == "__main__":
    main()
