"""Settling attempts from what M-PESA reports: STK callbacks (a claim) and STK Queries (a fact).

A callback is unsigned, so with MPESA_CONFIRM_CALLBACKS on (the default) a success is only
applied once an STK Query confirms it (reference/daraja-mpesa.md §3.5).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import format_kes
from invoiceiq.mpesa.schemas import CallbackError, StkCallback, parse_callback
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import messages, repository, review, service, success
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus

log = logging.getLogger(__name__)
UNMATCHED_REASON = "a success callback that matches no payment attempt"

# Set on a stored callback that came from outside MPESA_CALLBACK_ALLOWLIST: its success is
# confirmed by STK Query even when MPESA_CONFIRM_CALLBACKS is off, however late it is applied.
OUTSIDE_ALLOWLIST = "_outside_allowlist"
MAX_PHONE_DIGITS = 15  # E.164
# How far back a success whose CheckoutRequestID we never stored looks for other attempts that
# could own it before it is matched to a recent one.
ORPHAN_LOOKBACK = timedelta(days=1)
# A success callback from outside MPESA_CALLBACK_ALLOWLIST at odds with Safaricom's own.
OUTSIDE_DIFFERS_REASON = (
    "a callback from outside the allowlist reported this push differently from Safaricom's"
)
AMOUNT_DIFFERS = messages.AMOUNT_DIFFERS


async def apply_callback(
    session: AsyncSession,
    settings: Settings,
    callback: StkCallback,
    body: dict[str, object],
) -> bool:
    """Apply a stored callback; False when no attempt carries its CheckoutRequestID (yet)."""
    await repository.serialize_checkout(session, callback.checkout_request_id)
    payment = await repository.by_checkout_id(session, callback.checkout_request_id, lock=True)
    if payment is None:
        return False
    outside = _outside(body)
    stored_trusted = payment.callback_body is not None and not _outside(payment.callback_body)
    if callback.succeeded:
        if outside and stored_trusted:
            # Safaricom's own callback is stored: one from elsewhere never replaces it (its
            # receipt number would go on the receipts); a different story is kept for a person.
            if _success_claim(payment) is None or claimed_receipt(payment) != (
                callback.receipt_number
            ):
                await review.flag(session, payment, OUTSIDE_DIFFERS_REASON)
            return True
        # Kept whole: the confirmation reads the receipt number from it once M-PESA agrees.
        await repository.set_values(session, payment.id, callback_body=body)
        await apply_success_claim(session, settings, payment, callback, force_confirm=outside)
        return True
    if awaits_confirmation(payment) and (outside or stored_trusted):
        # A failure for a push whose success is being confirmed: two callbacks contradict each
        # other, so M-PESA's answer to the query decides (paid, or flagged for review), never
        # this one; failing now would tell a customer who paid to pay again. (A claim from
        # outside the allowlist does not hold back Safaricom's own failure.)
        log.warning(
            "stk failure callback for a success being confirmed; the query decides",
            extra={"payment": str(payment.id)},
        )
        return True
    if payment.status is not PaymentStatus.SUCCESS and payment.callback_body is None:
        await repository.set_values(session, payment.id, callback_body=body)
    await service.fail(
        session, settings, payment, code=callback.result_code, description=callback.result_desc
    )
    return True


async def apply_success_claim(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    callback: StkCallback,
    *,
    force_confirm: bool,
) -> None:
    """A success callback is a claim: checked against the attempt, then confirmed by STK Query
    (or applied at once when confirmation is off). Its receipt number is stored only with the
    success itself, so a claim M-PESA denies leaves no receipt behind."""
    if not amount_matches(payment, callback):
        paid = format_kes(callback.amount * 100) if callback.amount is not None else "no amount"
        await review.flag(
            session,
            payment,
            f"{AMOUNT_DIFFERS} {paid}, the attempt was for {format_kes(payment.amount_cents)}",
        )
        return
    receipt = callback.receipt_number
    if receipt and not await review.receipt_is_free(session, payment, receipt):
        await review.flag_reused_receipt(session, payment, receipt)
        return
    if payment.status is PaymentStatus.SUCCESS:
        # The query confirmed this push first; the callback only brings its receipt number.
        if receipt and payment.receipt_number is None:
            await repository.set_values(session, payment.id, receipt_number=receipt)
        return
    if settings.confirm_callbacks or force_confirm:
        await schedule_confirmation(session, payment, round_=0)
        return
    await success.mark_success(session, settings, payment, confirmed_by="callback", receipt=receipt)


def amount_matches(payment: Payment, callback: StkCallback) -> bool:
    return callback.amount is not None and callback.amount * 100 == payment.amount_cents


def claimed_receipt(payment: Payment) -> str | None:
    """The receipt number of the success callback stored on the attempt, if that callback is
    about this push and its amount; None otherwise (or when only the query knows)."""
    claim = _success_claim(payment)
    return claim.receipt_number if claim else None


def awaits_confirmation(payment: Payment) -> bool:
    """A success callback about this push and its amount is stored, not flagged, and the
    attempt still open: the confirmation job (`mpesa.confirm`) settles it, paid or flagged for
    review, never the reconciler (which would tell a customer who paid to pay again)."""
    open_claim = payment.status is PaymentStatus.INITIATED and not payment.needs_review
    return open_claim and _success_claim(payment) is not None


def _outside(body: dict[str, object]) -> bool:
    return body.get(OUTSIDE_ALLOWLIST) is True


def _success_claim(payment: Payment) -> StkCallback | None:
    """The stored callback, when it says this push succeeded for the attempt's amount."""
    if not payment.callback_body:
        return None
    try:
        callback = parse_callback(payment.callback_body)
    except CallbackError:
        return None
    about_this_push = callback.checkout_request_id == payment.checkout_request_id
    if not (callback.succeeded and about_this_push and amount_matches(payment, callback)):
        return None
    return callback


async def schedule_confirmation(
    session: AsyncSession,
    payment: Payment,
    *,
    round_: int,
    delay: float = 0,
    claimed_at: str | None = None,
    key: str | None = None,
) -> None:
    """`claimed_at` (ISO time) is when the success claim came: M-PESA gets RECONCILE_GIVE_UP
    from then, or from the push if later, to confirm it (a late success comes long after).
    `key` replaces the round's dedupe key (a row queued by the sweep, outside the rounds)."""
    payload = {
        "payment_id": str(payment.id),
        "round": round_,
        "claimed_at": claimed_at or utcnow().isoformat(),
    }
    await outbox.enqueue(
        session,
        service.CONFIRM_TOPIC,
        payload,
        key or f"confirm:{payment.id}:{round_}",
        not_before=utcnow() + timedelta(seconds=delay),
    )


async def match_orphan_success(
    session: AsyncSession, settings: Settings, callback: StkCallback
) -> Payment | None:
    """A success whose CheckoutRequestID we never stored (the push's answer was lost): the one
    attempt with the same phone and amount pushed (or given up on) within RECONCILE_GIVE_UP,
    if exactly one."""
    if callback.phone is None or callback.amount is None:
        return None
    now = utcnow()
    since = now - timedelta(seconds=settings.reconcile_give_up)
    # Every lost-answer attempt that could own this money, not only recent ones: an older one
    # given up may be whose it is (a late success), and matching the one recent attempt of
    # another invoice would then pay the wrong invoice. (Its TransactionDate cannot tell them
    # apart: Daraja does not document its time zone.)
    owners = await repository.orphan_candidates(
        session,
        phone=callback.phone,
        amount_cents=callback.amount * 100,
        since=now - ORPHAN_LOOKBACK,
    )
    recent = [c for c in owners if max(c.started_at, c.completed_at or c.started_at) >= since]
    if len({owner.invoice_id for owner in owners}) != 1 or len(recent) != 1:
        return None  # none, or more than one invoice it could be for: a person decides
    payment = recent[0]
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
        phone=_storable_phone(callback.phone),
        amount_cents=max(1, (callback.amount or 0) * 100),
        status=PaymentStatus.FAILED,
        checkout_request_id=callback.checkout_request_id,
        merchant_request_id=callback.merchant_request_id,
        result_code=callback.result_code,
        result_desc="unmatched success callback",
        callback_body=body,
        needs_review=True,
        review_reason=UNMATCHED_REASON,
    )
    # As review.flag logs every other flag: the alert on flags sees this money too.
    log.warning(
        "payment flagged for review", extra={"payment": str(payment.id), "reason": UNMATCHED_REASON}
    )
    return payment


def _storable_phone(phone: str | None) -> str:
    """The payer as reported, when it is a plain number; production may mask or hash it."""
    if phone and phone.isdigit() and len(phone) <= MAX_PHONE_DIGITS:
        return phone
    return "unknown"
