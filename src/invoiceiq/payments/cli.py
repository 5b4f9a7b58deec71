"""Operator commands for payments (DESIGN §1): ask M-PESA about an open attempt, and review the
payments flagged because money and records disagree.

`query` talks to Daraja outside any transaction and applies the answer in its own, as the
reconciler does. Listings mask phone numbers; nothing here prints a full number or a secret.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, NoReturn

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.admin_cli import _run_admin, in_transaction, ready_engine
from invoiceiq.config import Settings
from invoiceiq.db.engine import make_session_factory
from invoiceiq.inbox import service as inbox
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.kit.clock import nairobi
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn, mask_phones_in_text
from invoiceiq.payments import manual, repository
from invoiceiq.payments import review as payment_review
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.payments.models import Payment
from invoiceiq.providers import make_providers

NOTE_MAX = 2000
# Of an unreadable callback's body, what `payments review` shows.
EXCERPT_CHARS = 600
_TRAILING_NUMBER = re.compile(r"[17]\d{8}$")
_RECEIPT = re.compile(r"[A-Z0-9]{10}")
_CHECKOUT_ID = re.compile(r"ws_CO_\w+")

payments_app = typer.Typer(
    help="M-PESA payments: query an open attempt, review flagged payments.", no_args_is_help=True
)


@payments_app.command("query")
def query(
    number: Annotated[str, typer.Argument(help="The invoice number, e.g. INV7K3QX9A.")],
) -> None:
    """Ask M-PESA (STK Query) how the invoice's open attempt ended and apply the answer: paid,
    or failed so the customer can tap Pay again."""

    async def work(settings: Settings) -> str:
        engine = await ready_engine(settings)
        sessions = make_session_factory(engine)
        # Like `invoiceiq worker`: with the simulator on, Daraja is the one BASE_URL serves.
        providers = make_providers(settings, local_origin=settings.base_url, sessions=sessions)
        try:
            jobs = PaymentJobs(sessions=sessions, daraja=providers.daraja, settings=settings)
            return await jobs.query_invoice(number)
        finally:
            await providers.aclose()
            await engine.dispose()

    _run_admin(work)


@payments_app.command("review")
def review(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Also list the ones already resolved.")
    ] = False,
) -> None:
    """List payments flagged for review, then the callbacks that could not be read (phone
    numbers masked), oldest first."""

    async def work(settings: Settings) -> str:
        async def read(session: AsyncSession) -> str:
            rows = await repository.flagged(session, include_resolved=include_resolved)
            kept = await inbox.of_source(
                session, payment_review.UNREADABLE_CALLBACKS, include_processed=include_resolved
            )
            listing = render_review(rows) if rows or not kept else "no flagged payments"
            return listing + render_unreadable(kept)

        return await in_transaction(settings, read)

    _run_admin(work)


@payments_app.command("resolve")
def resolve(
    payment_id: Annotated[str, typer.Argument(help="The payment's id, from `payments review`.")],
    note: Annotated[str, typer.Option("--note", help="What was done about it.")],
    paid: Annotated[
        bool,
        typer.Option(
            "--paid",
            help="The money is on the M-PESA statement: mark the payment and its invoice paid "
            "and send both receipts.",
        ),
    ] = False,
    receipt: Annotated[
        str | None,
        typer.Option("--receipt", help="With --paid: the M-PESA receipt number, e.g. UKM7WYPX9W."),
    ] = None,
) -> None:
    """Close the review of a flagged payment with a note (the flag and its reason are kept)."""
    target = _parse_id(payment_id)
    text = note.strip()
    if not text or len(text) > NOTE_MAX:
        _refuse(f"--note must say what was done, in 1 to {NOTE_MAX} characters.")
    receipt_number = _parse_receipt(receipt, paid=paid)

    async def work(settings: Settings) -> str:
        async def change(session: AsyncSession) -> str:
            if not paid:
                return await payment_review.resolve_any(session, target, note=text)
            invoice = await manual.paid_by_hand(
                session, settings, target, note=text, receipt=receipt_number
            )
            return (
                f"resolved payment {target}: marked paid, invoice {invoice.number} PAID, a "
                "receipt on its way to the customer and the merchant"
            )

        return await in_transaction(settings, change)

    _run_admin(work)


def _parse_receipt(raw: str | None, *, paid: bool) -> str | None:
    if raw is None:
        return None
    if not paid:
        _refuse("--receipt goes with --paid: it is the receipt of money found on the statement.")
    receipt = raw.strip().upper()
    if not _RECEIPT.fullmatch(receipt):
        _refuse(f"{raw!r} is not an M-PESA receipt number: 10 letters and digits, e.g. UKM7WYPX9W.")
    return receipt


def _refuse(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code=2)


def _parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        _refuse(f"{raw!r} is not a payment id (a UUID, as `invoiceiq payments review` shows it).")


def mask_checkout_id(checkout_request_id: str) -> str:
    """Daraja's ids end with the payer's national number (`ws_CO_…712345678`): masked like one."""
    match = _TRAILING_NUMBER.search(checkout_request_id)
    if match is None:
        return checkout_request_id
    start = match.start()
    return checkout_request_id[:start] + mask_msisdn("254" + match.group())[3:]


def _mask_checkout_ids(text: str) -> str:
    return _CHECKOUT_ID.sub(lambda found: mask_checkout_id(found.group()), text)


def render_review(rows: list[tuple[Payment, str | None]]) -> str:
    if not rows:
        return "no payments need review"
    lines = [f"{len(rows)} payment(s) flagged for review"]
    for payment, number in rows:
        created = nairobi(payment.created_at).strftime("%Y-%m-%d %H:%M")
        phone = mask_msisdn(payment.phone) if payment.phone.isdigit() else "-"
        # Money M-PESA reported that matched no attempt is kept FAILED (nothing was paid by
        # it), which reads as "no money": say what it is.
        status = "UNMATCHED SUCCESS" if payment.invoice_id is None else payment.status.value
        lines.append(
            f"{payment.id}  {created} EAT  invoice {number or '(none)'}  {phone}  "
            f"{format_kes(payment.amount_cents)}  {status}  "
            f"receipt {payment.receipt_number or '-'}"
        )
        lines.append(f"    reason: {mask_phones_in_text(payment.review_reason or '-')}")
        if payment.checkout_request_id:
            lines.append(f"    CheckoutRequestID: {mask_checkout_id(payment.checkout_request_id)}")
        if payment.reviewed_at is not None:
            resolved = nairobi(payment.reviewed_at).strftime("%Y-%m-%d %H:%M")
            note = mask_phones_in_text(payment.review_note or "")
            lines.append(f"    resolved {resolved} EAT: {note}")
    return "\n".join(lines)


def render_unreadable(events: list[InboxEvent]) -> str:
    """Callbacks kept because they could not be read: when, why, and the start of the body."""
    if not events:
        return ""
    lines = [f"\n{len(events)} STK callback(s) that could not be read"]
    for event in events:
        received = nairobi(event.received_at).strftime("%Y-%m-%d %H:%M")
        payload = event.payload
        body = " ".join(str(payload.get("body", "")).split())
        excerpt = _mask_checkout_ids(mask_phones_in_text(body[:EXCERPT_CHARS]))
        if len(body) > EXCERPT_CHARS:
            excerpt += "…"
        lines.append(
            f"{event.id}  {received} EAT  {payload.get('bytes', '?')} bytes  "
            f"reason: {mask_phones_in_text(str(payload.get('reason', '-')))}"
        )
        lines.append(f"    body: {excerpt}")
        if event.processed_at is not None:
            resolved = nairobi(event.processed_at).strftime("%Y-%m-%d %H:%M")
            lines.append(f"    resolved {resolved} EAT: {mask_phones_in_text(event.error or '')}")
    return "\n".join(lines)
