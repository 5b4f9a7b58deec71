"""The money arrived: the payment SUCCESS, the invoice PAID, a receipt to each side.

A success that cannot be applied cleanly (a receipt number already used, an invoice already
paid or cancelled) is recorded and flagged for review, never dropped (DESIGN §5). Services
flush; callers commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.customers import service as customer_service
from invoiceiq.invoices.messages import invoice_link
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import INVOICE_TRANSITIONS, InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.state_machine import TransitionRefused
from invoiceiq.notifications import service as notifications
from invoiceiq.payments import messages, review
from invoiceiq.payments.context import business_name, invoice_of
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PAYMENT_TRANSITIONS, PaymentStatus


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
    reused = receipt is not None and not await review.receipt_is_free(session, payment, receipt)
    if receipt and not reused and payment.receipt_number is None:
        values["receipt_number"] = receipt
    try:
        await PAYMENT_TRANSITIONS.apply(
            session, Payment, payment.id, PaymentStatus.SUCCESS, values=values
        )
    except TransitionRefused:
        return False
    # Given up unconfirmed, then M-PESA told us after all: "did the customer pay?" has its
    # answer.
    for question in messages.UNCONFIRMED_REASONS:
        await review.settle_question(
            session,
            payment,
            question,
            note=f"settled on its own: M-PESA confirmed the payment ({confirmed_by})",
        )
    if reused and receipt is not None:
        # M-PESA confirmed the money; only the reported receipt number is suspect.
        await review.flag_reused_receipt(session, payment, receipt)
    invoice = await invoice_of(session, payment)
    if invoice is not None:
        await _invoice_paid(session, settings, invoice, payment, paid_at=values["completed_at"])
    return True


async def _invoice_paid(
    session: AsyncSession,
    settings: Settings,
    invoice: Invoice,
    payment: Payment,
    *,
    paid_at: datetime,
) -> None:
    """The invoice PAID and receipts to both sides; money for an invoice no longer payable is
    flagged instead of the merchant's receipt (the payer still gets theirs)."""
    try:
        await INVOICE_TRANSITIONS.apply(
            session, Invoice, invoice.id, InvoiceStatus.PAID, values={"paid_at": paid_at}
        )
    except TransitionRefused as refused:
        state = (refused.current or "").lower()
        await review.flag(
            session, payment, f"the invoice was already {state} when this payment came in"
        )
        await _send_receipt_to_customer(
            session, settings, invoice, payment, paid_at, invoice_was=state
        )
        return
    await _send_receipt_to_customer(session, settings, invoice, payment, paid_at)
    link = invoice_link(settings.base_url, invoice)
    if payment.phone != invoice.customer_phone and not await customer_service.is_opted_out(
        session, invoice.customer_phone
    ):
        # Paid from the page with another number: the customer invoiced hears it is paid, or
        # their chat ends at the invoice (or a failed attempt) and they may pay again. Not
        # after STOP: only receipts for payments they make still go to them.
        await notifications.send(
            session,
            to=invoice.customer_phone,
            message=messages.paid_by_other(
                invoice,
                business_name=await business_name(session, invoice),
                payer=payment.phone,
                receipt=payment.receipt_number,
                link=link,
            ),
            invoice_id=invoice.id,
        )
    await review.tell_merchant(
        session,
        invoice,
        messages.receipt_for_merchant(
            invoice,
            payer=payment.phone,
            receipt=payment.receipt_number,
            paid_at=paid_at,
            link=link,
        ),
    )


async def _send_receipt_to_customer(
    session: AsyncSession,
    settings: Settings,
    invoice: Invoice,
    payment: Payment,
    paid_at: datetime,
    *,
    invoice_was: str | None = None,
) -> None:
    """The payer's receipt (`invoice_was`: see messages.receipt_for_customer)."""
    business = await business_name(session, invoice)
    await notifications.send(
        session,
        to=payment.phone,
        message=messages.receipt_for_customer(
            invoice,
            business_name=business,
            receipt=payment.receipt_number,
            paid_at=paid_at,
            link=invoice_link(settings.base_url, invoice),
            invoice_was=invoice_was,
        ),
        invoice_id=invoice.id,
    )
