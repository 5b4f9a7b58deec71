"""Operator commands: merchants and the WhatsApp webhook (DESIGN §1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import sqlalchemy as sa
import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from invoiceiq.api import service as api_service
from invoiceiq.config import Settings
from invoiceiq.conversations import texts
from invoiceiq.db import migrate
from invoiceiq.db.engine import (
    DatabaseUnreachable,
    check_connection,
    make_engine,
    make_session_factory,
)
from invoiceiq.db.uow import unit_of_work
from invoiceiq.errors import AppError
from invoiceiq.kit.http import make_http_client
from invoiceiq.kit.phone import PhoneError, mask_msisdn, normalize_msisdn
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.merchants.states import MerchantStatus
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound, TemplateCall
from invoiceiq.ops.logging import configure_logging
from invoiceiq.whatsapp.client import WhatsAppClient
from invoiceiq.whatsapp.errors import WhatsAppError

T = TypeVar("T")

merchant_app = typer.Typer(help="Merchants: approve, suspend, API keys.", no_args_is_help=True)
whatsapp_app = typer.Typer(help="The WhatsApp channel (360dialog).", no_args_is_help=True)

Msisdn = Annotated[str, typer.Argument(help="The merchant's WhatsApp number, e.g. 0712345678.")]


def _phone(raw: str) -> str:
    try:
        return normalize_msisdn(raw)
    except PhoneError as error:
        typer.echo(error.message, err=True)
        raise typer.Exit(code=2) from None


async def ready_engine(settings: Settings) -> AsyncEngine:
    """An engine on a database an operator command can use: there, reachable, and migrated
    (else DatabaseUnreachable, told as one sentence). A SQLite file is never created here:
    an operator command on a mistyped path must not leave an empty database behind."""
    url = sa.make_url(settings.database_url)
    where = url.render_as_string(hide_password=True)
    if _missing_sqlite_file(url):
        raise DatabaseUnreachable(
            f"no database at {where}; check DATABASE_URL, or create it with `invoiceiq db upgrade`"
        )
    engine = make_engine(settings.database_url)
    try:
        await check_connection(engine)
        state = await migrate.migration_state(engine)
        if state == "behind":
            raise DatabaseUnreachable(
                f"the database at {where} is not at the latest migration; run "
                "`invoiceiq db upgrade` first"
            )
        if state == "ahead":
            raise DatabaseUnreachable(
                f"the database at {where} was migrated by a newer InvoiceIQ; run this command "
                "from that release"
            )
    except BaseException:
        await engine.dispose()
        raise
    return engine


def _missing_sqlite_file(url: sa.URL) -> bool:
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return False
    return not Path(path).exists()


async def in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction (the CLI's commit site is db/uow)."""
    engine = await ready_engine(settings)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def _run_admin(work: Callable[[Settings], Awaitable[str]]) -> None:
    from invoiceiq.cli import load_settings, run

    settings = load_settings()
    # What the command logs is JSON and masked, as the servers' is; only warnings and errors:
    # its answer is what it prints.
    configure_logging("WARNING")
    try:
        typer.echo(run(lambda: work(settings)))
    except AppError as error:
        typer.echo(error.message, err=True)
        raise typer.Exit(code=1) from None


@merchant_app.command("show")
def show(msisdn: Msisdn) -> None:
    """Show a merchant's status and business name, and the name waiting for approval if any:
    what `merchant approve` would approve."""
    phone = _phone(msisdn)

    async def work(settings: Settings) -> str:
        async def read(session: AsyncSession) -> str:
            merchant = await merchant_service.find(session, phone)
            if merchant is None:
                raise AppError("No merchant has that number.")
            status = _STATUS_WORDS.get(merchant.status, "active")
            text = f"{mask_msisdn(phone)}: {status}, business name {_quoted(merchant)}"
            if merchant.pending_business_name:
                text += f"; asks to be renamed {merchant.pending_business_name!r}"
            return text

        return await in_transaction(settings, read)

    _run_admin(work)


def _quoted(merchant: Merchant) -> str:
    return repr(merchant.business_name) if merchant.business_name else "(none yet)"


def _to_approve(merchant: Merchant) -> str:
    return merchant.pending_business_name or merchant.business_name or ""


@merchant_app.command("approve")
def approve(
    msisdn: Msisdn,
    checked_name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The business name you checked: nothing is approved if the merchant has "
            "changed it since.",
        ),
    ] = None,
) -> None:
    """Let a merchant who signed up under MERCHANT_SIGNUP=approval send invoices (or approve
    the new business name an approved merchant asked for; it prints the name approved)."""
    phone = _phone(msisdn)

    async def work(settings: Settings) -> str:
        async def change(session: AsyncSession) -> str:
            before = await merchant_service.find(session, phone, lock=True)
            checked = " ".join(checked_name.split()) if checked_name is not None else None
            if before is not None and checked is not None and _to_approve(before) != checked:
                raise AppError(
                    f"{mask_msisdn(phone)} asks to be approved as {_to_approve(before)!r}, "
                    f"not {checked!r}: nothing approved."
                )
            was = before.status if before else None
            pending = before.pending_business_name if before else None
            unchanged = was is MerchantStatus.ACTIVE and not pending
            merchant = await merchant_service.approve(session, phone=phone)
            name = merchant.business_name or ""
            if unchanged:  # nothing new to tell them
                return f"{mask_msisdn(phone)} ({name}) was active already: nothing to approve"
            await notifications.send(session, to=phone, message=_approved(name))
            lifted = "; was suspended, can invoice again" if was is MerchantStatus.SUSPENDED else ""
            return f"approved {mask_msisdn(phone)} ({name}){lifted}"

        return await in_transaction(settings, change)

    _run_admin(work)


def _approved(name: str) -> Outbound:
    """Approval may come days after the merchant last wrote: outside their 24-hour window only
    the template reaches them."""
    return Outbound(
        kind="account",
        text=texts.APPROVED.format(name=name),
        template=TemplateCall("merchant_account_approved", (name or "your business",)),
    )


_STATUS_WORDS = {
    MerchantStatus.SUSPENDED: "suspended",
    MerchantStatus.PENDING_APPROVAL: "waiting for approval",
}


@merchant_app.command("suspend")
def suspend(msisdn: Msisdn) -> None:
    """Stop a merchant from sending invoices (their existing invoices stay as they are)."""
    phone = _phone(msisdn)

    async def work(settings: Settings) -> str:
        async def change(session: AsyncSession) -> str:
            before = await merchant_service.find(session, phone, lock=True)
            if before is not None and before.status is MerchantStatus.SUSPENDED:
                return f"{mask_msisdn(phone)} was suspended already: nothing to do"
            await merchant_service.set_status(session, phone=phone, status=MerchantStatus.SUSPENDED)
            return f"suspended {mask_msisdn(phone)}"

        return await in_transaction(settings, change)

    _run_admin(work)


@merchant_app.command("api-key")
def api_key(
    msisdn: Msisdn,
    revoke_old: Annotated[
        bool, typer.Option("--revoke-old", help="Also revoke the merchant's existing keys.")
    ] = False,
) -> None:
    """Print a new REST API key for a merchant. It is shown once and stored only hashed."""
    phone = _phone(msisdn)

    async def work(settings: Settings) -> str:
        async def create(session: AsyncSession) -> str:
            merchant, key = await api_service.create_api_key(
                session, phone=phone, revoke_others=revoke_old
            )
            typer.echo(
                f"New API key for {mask_msisdn(phone)} ({merchant.business_name or 'no name'}); "
                "it will not be shown again:",
                err=True,
            )
            if merchant.status is not MerchantStatus.ACTIVE:
                typer.echo(
                    f"Note: this merchant is {_STATUS_WORDS[merchant.status]}, so the API "
                    "refuses to create invoices until `invoiceiq merchant approve`.",
                    err=True,
                )
            return key

        return await in_transaction(settings, create)

    _run_admin(work)


def _unreachable(settings: Settings, title: str) -> str:
    where = settings.whatsapp_url(settings.base_url)
    text = f"Could not reach 360dialog at {where} ({title})."
    if settings.simulator_enabled and not settings.whatsapp_api_url:
        text += " In development it is the app's simulator: is the app running at BASE_URL?"
    return text


@whatsapp_app.command("register-webhook")
def register_webhook() -> None:
    """Tell 360dialog to post this number's webhooks to {BASE_URL}/whatsapp/webhook."""

    async def work(settings: Settings) -> str:
        url = f"{settings.base_url}/whatsapp/webhook"
        async with make_http_client() as http:
            client = WhatsAppClient(
                settings.whatsapp_url(settings.base_url),
                settings.whatsapp_api_key.get_secret_value(),
                http,
            )
            try:
                await client.register_webhook(
                    url=url,
                    headers={
                        "X-Webhook-Secret": settings.whatsapp_webhook_secret.get_secret_value()
                    },
                )
            except WhatsAppError as error:
                if error.http_status is None:  # never answered: nothing was refused
                    raise AppError(_unreachable(settings, error.title)) from None
                raise AppError(f"360dialog refused the webhook: {error.title}") from None
        return f"webhook registered: {url}"

    _run_admin(work)
