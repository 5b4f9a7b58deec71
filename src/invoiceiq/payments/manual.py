"""An operator records money found on the M-PESA statement (`payments resolve --paid`).

For an attempt that failed without M-PESA's word on how it ended (given up, or its success
claim never confirmed), the statement is the last word: the payment SUCCESS (confirmed by the
operator), its invoice PAID, receipts to both sides, the review closed with the operator's note.
Refused, with nothing written, whenever that could charge or tell someone twice.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.errors import AppError
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.payments import repository, review, settlement, success
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus

# `confirmed_by` of a payment an operator found on the M-PESA statement.
BY_HAND = "operator"
BY_HAND_REASON = "marked paid by hand from the M-PESA statement"


async def paid_by_hand(
    session: AsyncSession,
    settings: Settings,
    payment_id: uuid.UUID,
    *,
    note: str,
    receipt: str | None,
) -> Invoice:
    """The payment SUCCESS and its invoice PAID, receipts out, the review closed with `note`;
    the invoice. `receipt` defaults to the one its stored success callback claimed."""
    payment = await _markable(session, payment_id)
    invoice = await _payable_invoice(session, payment)
    receipt = receipt or settlement.claimed_receipt(payment)
    if receipt is not None and not await review.receipt_is_free(session, payment, receipt):
        raise AppError(f"Receipt {receipt} belongs to another payment already.")
    marked = await success.mark_success(
        session, settings, payment, confirmed_by=BY_HAND, receipt=receipt
    )
    assert marked  # FAILED and locked: the transition cannot be refused
    await repository.set_values(
        session,
        payment.id,
        needs_review=True,
        review_reason=payment.review_reason or BY_HAND_REASON,
        reviewed_at=utcnow(),
        review_note=note,
    )
    return invoice


async def _markable(session: AsyncSession, payment_id: uuid.UUID) -> Payment:
    """The attempt, locked, if it failed without M-PESA's word: flagged, or given up."""
    payment = await repository.get(session, payment_id, lock=True)
    if payment is None:
        if await inbox.get_by_id(session, payment_id) is not None:
            raise AppError(
                f"{payment_id} is a callback that could not be read, not a payment: find the "
                "attempt it is about and mark that one paid, then resolve the callback with a note."
            )
        raise AppError(f"No payment {payment_id}. `invoiceiq payments review` lists flagged ones.")
    if payment.status is PaymentStatus.SUCCESS:
        raise AppError(
            f"Payment {payment_id} is SUCCESS already: M-PESA confirmed it, and its invoice "
            "was paid then (if it is flagged, its reason says why)."
        )
    if payment.status is PaymentStatus.INITIATED:
        raise AppError(
            f"Payment {payment_id} is still open: M-PESA may yet settle it. Run `invoiceiq "
            "payments query` on its invoice, or wait for the reconciler, then run this again."
        )
    if not (payment.needs_review or payment.result_code == repository.NO_RESPONSE):
        raise AppError(
            f"Payment {payment_id} failed with M-PESA's word ({payment.result_code}); money "
            "for it on the statement is a question for Safaricom, not a payment to record."
        )
    if settlement.AMOUNT_DIFFERS in (payment.review_reason or ""):
        raise AppError(
            f"Payment {payment_id} was for another amount than M-PESA reported: settle the "
            "difference with the merchant, then resolve it with a note (without --paid)."
        )
    if payment.invoice_id is None:
        raise AppError(
            f"Payment {payment_id} matches no invoice, so there is none to mark paid. Find the "
            "invoice by the transaction's AccountReference on the statement and settle it with "
            "the merchant, then resolve this payment with a note."
        )
    return payment


async def _payable_invoice(session: AsyncSession, payment: Payment) -> Invoice:
    """The attempt's invoice, locked, if it is still payable with no other attempt open."""
    assert payment.invoice_id is not None
    invoice = await invoice_repository.lock_for_status_change(session, payment.invoice_id)
    assert invoice is not None  # a payment's invoice is never deleted (ondelete RESTRICT)
    if invoice.status not in (InvoiceStatus.PENDING, InvoiceStatus.SENT):
        raise AppError(
            f"Invoice {invoice.number} is {invoice.status.value.lower()} already: nothing to "
            "mark paid. If the customer paid twice, refund one payment."
        )
    other = await repository.open_attempt(session, invoice.id)
    if other is not None:
        raise AppError(
            f"Invoice {invoice.number} has a payment attempt open ({other.id}): run `invoiceiq "
            f"payments query {invoice.number}` or wait for it to settle, then run this again."
        )
    return invoice
