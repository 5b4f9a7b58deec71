"""Payment use cases: start an attempt, record how the push went, apply callbacks and queries.

Money rules (DESIGN §4–§5): at most one open attempt per invoice (a partial unique index); a
failed attempt leaves the invoice payable; SUCCESS is final and wins over an earlier FAILED; a
success that cannot be applied cleanly (amount, receipt, invoice already paid or cancelled) is
recorded and flagged for review, never dropped. Services flush; callers commit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import INVOICE_TRANSITIONS, InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.state_machine import TransitionRefused
from invoiceiq.merchants import repository as merchant_repository
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import messages, repository
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PAYMENT_TRANSITIONS, PaymentStatus

log = logging.getLogger(__name__)

PUSH_TOPIC = "mpesa.stk_push"
RECONCILE_TOPIC = "mpesa.reconcile"
CONFIRM_TOPIC = "mpesa.confirm"
ORPHAN_TOPIC = "mpesa.orphan_callback"
CHECK_PHONE_KIND = "pay_check_phone"
CHECK_PHONE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class StartResult:
    outcome: Literal["started", "open", "wait", "paid", "cancelled"]
    payment: Payment | None = None
    wait_seconds: int = 0
    receipt: str | None = None


async def has_open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> bool:
    return await repository.open_attempt(session, invoice_id) is not None


async def latest_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await repository.latest_success(session, invoice_id)


# Starting -------------------------------------------------------------------------------------


async def start_payment(
    session: AsyncSession, settings: Settings, *, invoice: Invoice, phone: str
) -> StartResult:
    """The checks of DESIGN §5 after "is this the customer", in order; then the attempt and
    its push job in the caller's transaction. No reply yet: the push handler says "check your
    phone" once Daraja accepts."""
    if invoice.status is InvoiceStatus.PAID:
        paid = await repository.latest_success(session, invoice.id)
        return StartResult("paid", paid, receipt=paid.receipt_number if paid else None)
    if invoice.status is InvoiceStatus.CANCELLED:
        return StartResult("cancelled")
    open_attempt = await repository.open_attempt(session, invoice.id)
    if open_attempt is not None:
        return StartResult("open", open_attempt)
    wait = await _seconds_to_wait(session, settings, phone=phone, amount_cents=invoice.amount_cents)
    if wait > 0:
        return StartResult("wait", wait_seconds=wait)
    try:
        async with session.begin_nested():
            payment = await repository.add(
                session, invoice_id=invoice.id, phone=phone, amount_cents=invoice.amount_cents
            )
    except IntegrityError:  # a simultaneous tap won the one open slot
        return StartResult("open", await repository.open_attempt(session, invoice.id))
    await outbox.enqueue(session, PUSH_TOPIC, {"payment_id": str(payment.id)}, f"push:{payment.id}")
    return StartResult("started", payment)


async def _seconds_to_wait(
    session: AsyncSession, settings: Settings, *, phone: str, amount_cents: int
) -> int:
    now = utcnow()
    waits = [0.0]
    last = await repository.last_attempt_at(session, phone=phone, amount_cents=amount_cents)
    if last is not None:
        waits.append(settings.pay_cooldown - (now - last).total_seconds())
    unsettled = await repository.open_attempt_for_phone(session, phone)
    if unsettled is not None:  # a push whose outcome is still unknown: never stack another
        started = unsettled.push_sent_at or unsettled.created_at
        waits.append(max(5.0, settings.reconcile_after - (now - started).total_seconds()))
    return int(max(waits) + 0.999)


async def should_nudge(session: AsyncSession, payment: Payment) -> bool:
    """ "Check your phone" at most once a minute per invoice, and not before the push went out
    (its handler says it then)."""
    if payment.checkout_request_id is None or payment.invoice_id is None:
        return False
    last = await notifications.last_sent_at(
        session, invoice_id=payment.invoice_id, kind=CHECK_PHONE_KIND
    )
    return last is None or utcnow() - last >= CHECK_PHONE_EVERY


def check_phone_message(invoice: Invoice) -> Outbound:
    from invoiceiq.kit.money import format_kes

    text = messages.CHECK_PHONE.format(
        amount=format_kes(invoice.amount_cents), number=invoice.number
    )
    return Outbound(kind=CHECK_PHONE_KIND, text=text)


# Outcomes -------------------------------------------------------------------------------------


async def record_accepted(
    session: AsyncSession,
    payment: Payment,
    *,
    checkout_request_id: str,
    merchant_request_id: str,
    request_body: dict[str, Any],
) -> None:
    await repository.set_values(
        session,
        payment.id,
        checkout_request_id=checkout_request_id,
        merchant_request_id=merchant_request_id,
        request_body=request_body,
    )
    invoice = await _invoice(session, payment)
    if invoice is not None and payment.status is PaymentStatus.INITIATED:
        await notifications.send(
            session, to=payment.phone, message=check_phone_message(invoice), invoice_id=invoice.id
        )


async def fail(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    *,
    code: str,
    description: str | None = None,
    tell_merchant: bool = True,
) -> bool:
    """INITIATED → FAILED, both sides told why in plain words; False if it was settled already."""
    try:
        await PAYMENT_TRANSITIONS.apply(
            session,
            Payment,
            payment.id,
            PaymentStatus.FAILED,
            source=PaymentStatus.INITIATED,
            values={"result_code": code, "result_desc": description, "completed_at": utcnow()},
        )
    except TransitionRefused:
        return False
    invoice = await _invoice(session, payment)
    if invoice is None:
        return True
    business = await _business_name(session, invoice)
    await notifications.send(
        session,
        to=payment.phone,
        message=messages.failure_for_customer(invoice, business_name=business, code=code),
        invoice_id=invoice.id,
    )
    if tell_merchant:
        await _tell_merchant(session, invoice, messages.failure_for_merchant(invoice, code=code))
    return True


async def mark_success(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    *,
    confirmed_by: str,
    receipt: str | None = None,
) -> bool:
    """The money arrived: SUCCESS (from INITIATED or FAILED), the invoice PAID, receipts out.

    On an invoice already PAID or CANCELLED the payment is recorded and flagged, and the
    merchant is told: money is never silently dropped. False if it was SUCCESS already.
    """
    values: dict[str, Any] = {"completed_at": utcnow(), "confirmed_by": confirmed_by}
    if receipt and payment.receipt_number is None:
        values["receipt_number"] = receipt
    try:
        await PAYMENT_TRANSITIONS.apply(
            session, Payment, payment.id, PaymentStatus.SUCCESS, values=values
        )
    except TransitionRefused:
        return False
    invoice = await _invoice(session, payment, lock=True)
    if invoice is None:
        return True
    paid_at = values["completed_at"]
    try:
        await INVOICE_TRANSITIONS.apply(
            session, Invoice, invoice.id, InvoiceStatus.PAID, values={"paid_at": paid_at}
        )
    except TransitionRefused as refused:
        state = (refused.current or "").lower()
        await flag(session, payment, f"the invoice was already {state} when this payment came in")
        await _send_receipt_to_customer(session, settings, invoice, payment, paid_at)
        return True
    await _send_receipt_to_customer(session, settings, invoice, payment, paid_at)
    link = _link(settings, invoice)
    receipt_number = payment.receipt_number or receipt
    await _tell_merchant(
        session,
        invoice,
        messages.receipt_for_merchant(invoice, receipt=receipt_number, paid_at=paid_at, link=link),
    )
    return True


async def _send_receipt_to_customer(
    session: AsyncSession, settings: Settings, invoice: Invoice, payment: Payment, paid_at: datetime
) -> None:
    business = await _business_name(session, invoice)
    await notifications.send(
        session,
        to=payment.phone,
        message=messages.receipt_for_customer(
            invoice,
            business_name=business,
            receipt=payment.receipt_number,
            paid_at=paid_at,
            link=_link(settings, invoice),
        ),
        invoice_id=invoice.id,
    )


async def flag(session: AsyncSession, payment: Payment, reason: str) -> None:
    """Keep the payment for `payments review` and tell its merchant (once per payment)."""
    if payment.needs_review:
        return
    await repository.set_values(session, payment.id, needs_review=True, review_reason=reason[:255])
    log.warning("payment flagged for review", extra={"payment": str(payment.id), "reason": reason})
    invoice = await _invoice(session, payment)
    if invoice is not None:
        await _tell_merchant(
            session,
            invoice,
            messages.review_for_merchant(invoice, amount_cents=payment.amount_cents, reason=reason),
        )


async def resolve(session: AsyncSession, payment_id: uuid.UUID, *, note: str) -> Payment | None:
    payment = await repository.get(session, payment_id, lock=True)
    if payment is None or not payment.needs_review:
        return None
    await repository.set_values(session, payment.id, reviewed_at=utcnow(), review_note=note)
    return payment


# Helpers --------------------------------------------------------------------------------------


async def _invoice(
    session: AsyncSession, payment: Payment, *, lock: bool = False
) -> Invoice | None:
    if payment.invoice_id is None:
        return None
    return await invoice_repository.get(session, payment.invoice_id)


async def _business_name(session: AsyncSession, invoice: Invoice) -> str:
    merchant = await merchant_repository.get(session, invoice.merchant_id)
    return (merchant.business_name if merchant else None) or "the business"


async def _tell_merchant(session: AsyncSession, invoice: Invoice, message: Outbound) -> None:
    merchant = await merchant_repository.get(session, invoice.merchant_id)
    if merchant is not None:
        await notifications.send(session, to=merchant.phone, message=message, invoice_id=invoice.id)


def _link(settings: Settings, invoice: Invoice) -> str:
    return f"{settings.base_url}/i/{invoice.public_token}"


# The Pay button -------------------------------------------------------------------------------


async def tap_to_pay(
    session: AsyncSession, settings: Settings, *, phone: str, number: str
) -> list[Outbound]:
    """A tap on **Pay with M-PESA**: the replies to the tapper (often none: the push handler
    says "check your phone" once Daraja accepts)."""
    invoice = await invoice_repository.get_by_number(session, number)
    if invoice is None or invoice.customer_phone != phone:
        # The same words whether the invoice exists or not: nothing about it or its customer.
        return [Outbound(kind="pay_refused", text=messages.NOT_YOURS)]
    result = await start_payment(session, settings, invoice=invoice, phone=phone)
    if result.outcome == "paid":
        receipt = f" (M-PESA receipt {result.receipt})" if result.receipt else ""
        text = messages.ALREADY_PAID.format(number=number, receipt=receipt)
        return [Outbound(kind="pay_refused", text=text)]
    if result.outcome == "cancelled":
        return [Outbound(kind="pay_refused", text=messages.CANCELLED.format(number=number))]
    if result.outcome == "open":
        if result.payment is not None and await should_nudge(session, result.payment):
            return [check_phone_message(invoice)]
        return []
    if result.outcome == "wait":
        return [Outbound(kind="pay_wait", text=messages.WAIT.format(seconds=result.wait_seconds))]
    return []
