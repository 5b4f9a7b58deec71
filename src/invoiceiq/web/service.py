"""The public page's use cases: show an invoice, pay it from the web, report progress.

Paying uses payments.service.start_payment, the same rules as the WhatsApp Pay button (one
open attempt, M-PESA's cooldown). The page adds limits of its own, since anyone holding the
link could otherwise fire PIN prompts at the customer (reference/lessons-from-the-original.md):
at most PUSHES_PER_INVOICE prompts per invoice per hour (counted from the payment table), and
PAY_PER_CLIENT requests per client address (database counters, shared by all web processes).
The page also lets someone else pay, from a number they type; a number that is not the
invoice's customer gets at most PROMPTS_AS_OTHER_PAYER prompts an hour across all invoices (or
any link could be used to fire prompts at a stranger's phone, "enter your PIN to get a
refund"), and when it must wait it is not told why: that would say whether the stranger is
paying someone else just now.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import nairobi, utcnow
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import PhoneError, mask_msisdn, normalize_msisdn
from invoiceiq.merchants import service as merchant_service
from invoiceiq.payments import messages as payment_messages
from invoiceiq.payments import service as payment_service
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.web import repository
from invoiceiq.web.errors import LinkNotFound, NotPayable, PhoneInvalid, TooManyRequests


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    seconds: int


# Generous per address: many phones share one address behind mobile carriers' NAT.
PAY_PER_CLIENT = Limit("pay-client", 20, 600)
PUSHES_PER_INVOICE = Limit("pay-invoice", 3, 3600)
PROMPTS_AS_OTHER_PAYER = Limit("pay-other-number", 3, 3600)
UNPAID = (InvoiceStatus.PENDING, InvoiceStatus.SENT)


@dataclass(frozen=True)
class InvoicePage:
    """What the page and the PDF show."""

    invoice: Invoice
    business_name: str
    latest: Payment | None
    receipt: str | None
    # Money M-PESA took after the invoice was cancelled (flagged; the merchant was told).
    paid_after_cancel: bool = False

    @property
    def payable(self) -> bool:
        return self.invoice.status in UNPAID


async def load(session: AsyncSession, token: str) -> InvoicePage:
    invoice = await invoice_service.find_by_token(session, token)
    if invoice is None:
        raise LinkNotFound()
    merchant = await merchant_service.get(session, invoice.merchant_id)
    latest = await payment_service.latest_attempt(session, invoice.id)
    paid = None
    if invoice.status in (InvoiceStatus.PAID, InvoiceStatus.CANCELLED):
        paid = await payment_service.first_success(session, invoice.id)
    receipt = paid.receipt_number if paid else None
    business = (merchant.business_name if merchant else None) or "The business"
    after_cancel = paid is not None and invoice.status is InvoiceStatus.CANCELLED
    return InvoicePage(invoice, business, latest, receipt, paid_after_cancel=after_cancel)


# Limits ---------------------------------------------------------------------------------------


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


async def count_client_request(
    session: AsyncSession, *, secret: bytes, address: str, now: datetime | None = None
) -> None:
    """Count a pay request from `address`; past PAY_PER_CLIENT, TooManyRequests.

    Run it in a transaction of its own, committed even when the request is then refused.
    The address is stored only as a keyed digest.
    """
    now = now or utcnow()
    limit = PAY_PER_CLIENT
    window = int(now.timestamp() // limit.seconds)
    ends = datetime.fromtimestamp((window + 1) * limit.seconds, tz=now.tzinfo)
    subject = hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:40]
    await repository.delete_expired(session, now=now)
    count = await repository.hit(
        session, key=f"{limit.name}:{subject}", window_index=window, expires_at=ends
    )
    if count > limit.count:
        wait = (ends - now).total_seconds()
        raise TooManyRequests(
            "Too many payment requests came from your network. "
            f"Please try again in {_minutes(wait)} min.",
            headers={"Retry-After": str(math.ceil(wait))},
        )


async def _check_invoice_limit(session: AsyncSession, invoice: Invoice, back_url: str) -> None:
    now = utcnow()
    limit = PUSHES_PER_INVOICE
    window = timedelta(seconds=limit.seconds)
    times = await payment_service.prompt_times_since(session, invoice.id, now - window)
    if len(times) < limit.count:
        return
    wait = (times[-limit.count] + window - now).total_seconds()
    raise TooManyRequests(
        f"This invoice has had {limit.count} payment prompts in the last hour. To protect the "
        f"customer's phone, the next one can be sent in {_minutes(wait)} min.",
        back_url=back_url,
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


async def _check_other_payer_limit(session: AsyncSession, phone: str, back_url: str) -> None:
    now = utcnow()
    limit = PROMPTS_AS_OTHER_PAYER
    window = timedelta(seconds=limit.seconds)
    times = await payment_service.prompt_times_as_other_payer(session, phone, now - window)
    if len(times) < limit.count:
        return
    # How many prompts that number had, and when, is its owner's business: the answer says
    # neither, and asks to come back once the whole window has passed.
    raise TooManyRequests(
        OTHER_PAYER_LATER, back_url=back_url, headers={"Retry-After": str(limit.seconds)}
    )


OTHER_PAYER_WAIT = (
    "A payment prompt can't be sent to that number just now. Try again in a few minutes."
)
OTHER_PAYER_RETRY_AFTER_S = 120
OTHER_PAYER_LATER = (
    "A payment prompt can't be sent to that number just now. Try again later, or pay from "
    "the number the invoice was sent to."
)


# Paying ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayAnswer:
    outcome: str
    message: str
    status_code: int

    def as_json(self, invoice: Invoice) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message, "status": invoice.status.value}


def payer_phone(page: InvoicePage, typed: str | None, back_url: str) -> str:
    """The number typed, if any (a Kenyan mobile), else the customer's own."""
    if typed is None or not typed.strip():
        return page.invoice.customer_phone
    try:
        return normalize_msisdn(typed)
    except PhoneError as error:
        fields = {"phone": error.message}
        raise PhoneInvalid(error.message, back_url=back_url, fields=fields) from None


async def pay(
    session: AsyncSession, settings: Settings, *, page: InvoicePage, phone: str, back_url: str
) -> PayAnswer:
    """Start an M-PESA prompt to `phone` (already confirmed by the payer), within the limits."""
    invoice = page.invoice
    if invoice.status is InvoiceStatus.CANCELLED:
        raise NotPayable(
            f"{page.business_name} cancelled this invoice, so it can't be paid.", back_url=back_url
        )
    other_payer = phone != invoice.customer_phone
    if invoice.status in UNPAID and not await payment_service.has_open_attempt(session, invoice.id):
        await _check_invoice_limit(session, invoice, back_url)
        if other_payer:
            await _check_other_payer_limit(session, phone, back_url)
    result = await payment_service.start_payment(session, settings, invoice=invoice, phone=phone)
    if result.outcome == "started":
        amount = format_kes(invoice.amount_cents)
        return PayAnswer(
            "started",
            f"Check the phone {mask_msisdn(phone)}: enter your M-PESA PIN in the prompt to pay "
            f"{amount}.",
            202,
        )
    if result.outcome == "open" and result.payment and payment_service.answer_lost(result.payment):
        return PayAnswer("open", _unsure_prompt(mask_msisdn(result.payment.phone)), 200)
    if result.outcome == "open":
        where = mask_msisdn(result.payment.phone) if result.payment else "the phone"
        return PayAnswer(
            "open",
            f"A payment prompt was already sent to {where}. Enter your M-PESA PIN there, or wait "
            "until it ends before trying again.",
            200,
        )
    if result.outcome == "wait" and other_payer:
        # Why it waits (a prompt open for another invoice, one for the same amount a moment
        # ago) is the number's owner's business, not the typist's.
        raise TooManyRequests(
            OTHER_PAYER_WAIT,
            back_url=back_url,
            headers={"Retry-After": str(OTHER_PAYER_RETRY_AFTER_S)},
        )
    if result.outcome == "wait":
        raise TooManyRequests(
            payment_messages.wait_text(result.wait_reason, result.wait_seconds, again="try again"),
            back_url=back_url,
            headers={"Retry-After": str(result.wait_seconds)},
        )
    if result.outcome == "cancelled":
        raise NotPayable(
            f"{page.business_name} cancelled this invoice, so it can't be paid.", back_url=back_url
        )
    return PayAnswer("paid", "This invoice is already paid. Nothing more to pay.", 200)


# Progress -------------------------------------------------------------------------------------


def payment_state(payment: Payment | None) -> dict[str, Any] | None:
    """The latest attempt as the page's poller reads it: no full phone number, plain words."""
    if payment is None:
        return None
    state: dict[str, Any] = {
        "status": payment.status.value,
        "phone": mask_msisdn(payment.phone),
        "started_at": payment.created_at.isoformat(),
        "receipt_number": payment.receipt_number,
    }
    if payment.status is PaymentStatus.INITIATED and payment_service.answer_lost(payment):
        state["message"] = _unsure_prompt(state["phone"])
    elif payment.status is PaymentStatus.INITIATED:
        state["message"] = f"Waiting for the M-PESA PIN on {state['phone']}."
    elif payment_service.outcome_unknown(payment):
        state["message"] = payment_service.UNCONFIRMED_FOR_PAYER
    elif payment.status is PaymentStatus.FAILED:
        reason = payment_service.failure_reason_for_payer(payment.result_code)
        state["message"] = f"The payment did not go through: {reason}. You can try again."
    else:
        state["message"] = "Payment received."
    return state


def _unsure_prompt(masked_phone: str) -> str:
    """M-PESA's answer to the push was lost: whether a prompt reached the phone is unknown."""
    return (
        f"We could not confirm that M-PESA sent a prompt to {masked_phone}. If one came, enter "
        "your PIN there. If none came, you can try again in a few minutes, once we have "
        "checked with M-PESA."
    )


def paid_stamp(invoice: Invoice) -> str | None:
    """When it was paid, as the page shows it (and its script, from the status poll)."""
    if invoice.paid_at is None:
        return None
    return nairobi(invoice.paid_at).strftime("%d %b %Y, %H:%M (Nairobi time)")


def status_payload(page: InvoicePage) -> dict[str, Any]:
    invoice = page.invoice
    return {
        "status": invoice.status.value,
        "paid_at": invoice.paid_at.isoformat() if invoice.paid_at else None,
        "paid_at_text": paid_stamp(invoice),
        "receipt_number": page.receipt,
        # Paid by a prompt answered after the merchant cancelled: the page says to settle it.
        "paid_after_cancel": page.paid_after_cancel,
        "payment": payment_state(page.latest),
    }
