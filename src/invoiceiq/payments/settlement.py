"""Settling attempts from what M-PESA reports: STK callbacks (a claim) and STK Queries (a fact).

A callback is unsigned, so with MPESA_CONFIRM_CALLBACKS on (the default) a success is only
applied once an STK Query confirms it (reference/daraja-mpesa.md §3.5).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import format_kes
from invoiceiq.mpesa.schemas import StkCallback
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import repository, service
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus


async def apply_callback(
    session: AsyncSession,
    settings: Settings,
    callback: StkCallback,
    body: dict[str, object],
    *,
    force_confirm: bool = False,
) -> bool:
    """Apply a stored callback; False when no attempt carries its CheckoutRequestID (yet)."""
    payment = await repository.by_checkout_id(session, callback.checkout_request_id, lock=True)
    if payment is None:
        return False
    if payment.callback_body is None or callback.succeeded:
        await repository.set_values(session, payment.id, callback_body=body)
    if not callback.succeeded:
        await service.fail(
            session, settings, payment, code=callback.result_code, description=callback.result_desc
        )
        return True
    await apply_success_claim(session, settings, payment, callback, force_confirm=force_confirm)
    return True


async def apply_success_claim(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    callback: StkCallback,
    *,
    force_confirm: bool,
) -> None:
    if callback.amount is None or callback.amount * 100 != payment.amount_cents:
        paid = format_kes(callback.amount * 100) if callback.amount is not None else "no amount"
        await service.flag(
            session,
            payment,
            f"M-PESA reported {paid}, the attempt was for {format_kes(payment.amount_cents)}",
        )
        return
    receipt = callback.receipt_number
    if receipt and payment.receipt_number is None:
        other = await repository.by_receipt(session, receipt)
        if other is not None and other.id != payment.id:
            await service.flag(
                session, payment, f"receipt {receipt} was already used by another payment"
            )
            return
        await repository.set_values(session, payment.id, receipt_number=receipt)
    if payment.status is PaymentStatus.SUCCESS:
        return  # a repeat, or the receipt for a success the query confirmed first
    if settings.confirm_callbacks or force_confirm:
        await schedule_confirmation(session, payment, round_=0)
        return
    await service.mark_success(session, settings, payment, confirmed_by="callback", receipt=receipt)


async def schedule_confirmation(
    session: AsyncSession, payment: Payment, *, round_: int, delay: float = 0
) -> None:
    await outbox.enqueue(
        session,
        service.CONFIRM_TOPIC,
        {"payment_id": str(payment.id), "round": round_},
        f"confirm:{payment.id}:{round_}",
        not_before=utcnow() + timedelta(seconds=delay),
    )


async def schedule_reconcile(
    session: AsyncSession, payment: Payment, *, round_: int, delay: float
) -> None:
    await outbox.enqueue(
        session,
        service.RECONCILE_TOPIC,
        {"payment_id": str(payment.id), "round": round_},
        f"reconcile:{payment.id}:{round_}",
        not_before=utcnow() + timedelta(seconds=delay),
    )


async def match_orphan_success(
    session: AsyncSession, settings: Settings, callback: StkCallback
) -> Payment | None:
    """A success whose CheckoutRequestID we never stored (the push's answer was lost): the one
    attempt with the same phone and amount pushed within RECONCILE_GIVE_UP, if exactly one."""
    if callback.phone is None or callback.amount is None:
        return None
    since = utcnow() - timedelta(seconds=settings.reconcile_give_up)
    candidates = await repository.orphan_candidates(
        session, phone=callback.phone, amount_cents=callback.amount * 100, since=since
    )
    if len(candidates) != 1:
        return None
    payment = candidates[0]
    await repository.set_values(
        session,
        payment.id,
        checkout_request_id=callback.checkout_request_id,
        merchant_request_id=callback.merchant_request_id,
    )
    return payment


async def keep_unmatched_success(
    session: AsyncSession, callback: StkCallback, body: dict[str, object]
) -> Payment:
    """Money M-PESA says arrived that matches no attempt: recorded for review, nothing paid."""
    payment = await repository.add(
        session,
        invoice_id=None,
        phone=callback.phone or "unknown",
        amount_cents=max(1, (callback.amount or 0) * 100),
        status=PaymentStatus.FAILED,
        checkout_request_id=callback.checkout_request_id,
        merchant_request_id=callback.merchant_request_id,
        result_code=callback.result_code,
        result_desc="unmatched success callback",
        callback_body=body,
        needs_review=True,
        review_reason="a success callback that matches no payment attempt",
    )
    return payment
