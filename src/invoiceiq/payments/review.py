"""Payments a person must look at: money and records disagree (DESIGN §4–§5).

A payment is flagged, never dropped or silently applied, when M-PESA's report cannot be taken as
it is (a denied claim, a different amount, a receipt number seen before, money for an invoice
already paid or cancelled, or for no attempt at all). Its merchant is told; `invoiceiq payments
review` lists it and `payments resolve` closes it with a note. Services flush; callers commit.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.errors import AppError
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.models import Invoice
from invoiceiq.kit.clock import utcnow
from invoiceiq.merchants import repository as merchant_repository
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.payments import messages, repository
from invoiceiq.payments.models import Payment

log = logging.getLogger(__name__)
REASON_MAX = 255  # the column's size
# The inbox source of STK callbacks behind the right path secret that could not be read: kept
# for review, since one may be the only word that a customer paid (mpesa/callbacks.py).
UNREADABLE_CALLBACKS = "mpesa.unreadable"
RECEIPT_REUSED = "was already used by another payment"


async def flag_reused_receipt(session: AsyncSession, payment: Payment, receipt: str) -> None:
    """M-PESA's receipt number for this payment is another payment's already."""
    await flag(
        session,
        payment,
        f"receipt {receipt} {RECEIPT_REUSED}",
        logged_as=f"its receipt number {RECEIPT_REUSED}",
    )


async def flag(
    session: AsyncSession, payment: Payment, reason: str, *, logged_as: str | None = None
) -> None:
    """Keep the payment for review and tell its merchant, once per reason: a new reason on a
    payment already flagged (or reviewed) flags it again, added to the old one. `logged_as`
    is the reason as the log says it, when the reason names what logs must not (a receipt)."""
    if payment.under_review:
        if reason in (payment.review_reason or ""):
            return
        reason_text = f"{payment.review_reason}; {reason}" if payment.review_reason else reason
    else:
        reason_text = reason
    await repository.set_values(
        session,
        payment.id,
        needs_review=True,
        review_reason=reason_text[:REASON_MAX],
        reviewed_at=None,
    )
    log.warning(
        "payment flagged for review",
        extra={"payment": str(payment.id), "reason": logged_as or reason},
    )
    if payment.invoice_id is None:
        return  # money that matched no attempt: no merchant to tell, the operator's list has it
    invoice = await invoice_repository.get(session, payment.invoice_id)
    if invoice is not None:
        await tell_merchant(
            session,
            invoice,
            messages.review_for_merchant(invoice, amount_cents=payment.amount_cents, reason=reason),
        )


async def settle_question(
    session: AsyncSession, payment: Payment, reason: str, *, note: str
) -> bool:
    """Resolve the review of `payment` when `reason` was all it was flagged for and the question
    it asked is answered now (the note says how); True when it did. Any other reason keeps the
    payment on the operator's list."""
    if not payment.needs_review or payment.reviewed_at is not None:
        return False
    if payment.review_reason != reason[:REASON_MAX]:
        return False
    await repository.set_values(session, payment.id, reviewed_at=utcnow(), review_note=note)
    return True


async def resolve(session: AsyncSession, payment_id: uuid.UUID, *, note: str) -> Payment:
    """Close a review with a note saying what was done; the flag and its reason stay."""
    payment = await repository.get(session, payment_id, lock=True)
    if payment is None:
        raise AppError(f"No payment {payment_id}. `invoiceiq payments review` lists flagged ones.")
    if not payment.needs_review:
        raise AppError(f"Payment {payment_id} is not flagged for review: nothing to resolve.")
    if payment.reviewed_at is not None:
        raise AppError(f"Payment {payment_id} was resolved already: {payment.review_note}")
    await repository.set_values(session, payment.id, reviewed_at=utcnow(), review_note=note)
    return payment


async def resolve_any(session: AsyncSession, target_id: uuid.UUID, *, note: str) -> str:
    """Close the review of a flagged payment, or of a callback that could not be read, by the
    id `payments review` shows; what was resolved."""
    payment = await repository.get(session, target_id, lock=True)
    if payment is None:
        event = await inbox.get_by_id(session, target_id)
        if event is not None and event.source == UNREADABLE_CALLBACKS:
            if event.processed_at is not None:
                raise AppError(f"Callback {target_id} was resolved already: {event.error}")
            await inbox.mark_processed(session, event, note)
            return f"resolved unreadable callback {target_id}"
    await resolve(session, target_id, note=note)
    return f"resolved payment {target_id}"


async def receipt_is_free(session: AsyncSession, payment: Payment, receipt: str) -> bool:
    """M-PESA receipt numbers are unique: False when another payment already holds this one."""
    other = await repository.by_receipt(session, receipt)
    return other is None or other.id == payment.id


async def tell_merchant(session: AsyncSession, invoice: Invoice, message: Outbound) -> None:
    merchant = await merchant_repository.get(session, invoice.merchant_id)
    if merchant is not None:
        await notifications.send(session, to=merchant.phone, message=message, invoice_id=invoice.id)
