"""Payment use cases: start an attempt, record how the push went, apply callbacks and queries.

Money rules (DESIGN §4–§5): at most one open attempt per invoice (a partial unique index); a
failed attempt leaves the invoice payable; SUCCESS is final and wins over an earlier FAILED; a
success that cannot be applied cleanly (amount, receipt, invoice already paid or cancelled) is
recorded and flagged for review, never dropped. Services flush; callers commit.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.messages import invoice_link
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.state_machine import TransitionRefused
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import messages, repository, review
from invoiceiq.payments.context import business_name, invoice_of
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PAYMENT_TRANSITIONS, PaymentStatus

log = logging.getLogger(__name__)

PUSH_TOPIC = "mpesa.stk_push"
RECONCILE_TOPIC = "mpesa.reconcile"
CONFIRM_TOPIC = "mpesa.confirm"
ORPHAN_TOPIC = "mpesa.orphan_callback"
CHECK_PHONE_EVERY = timedelta(minutes=1)
# Longer than the HTTP client waits for Daraja's answer to a push (kit/http.py, read 15 s).
PUSH_ANSWER_WAIT = timedelta(seconds=30)
# What the invoice page says of an attempt given up whose outcome is unknown (`outcome_unknown`).
UNCONFIRMED_FOR_PAYER = messages.UNCONFIRMED_ON_PAGE


WaitReason = Literal["cooldown", "prompt_open", "checking"]


@dataclass(frozen=True)
class StartResult:
    outcome: Literal["started", "open", "wait", "paid", "cancelled"]
    payment: Payment | None = None
    wait_seconds: int = 0
    # Why the payer waits (messages.WAITS): an open attempt of theirs first, else the cooldown.
    wait_reason: WaitReason = "cooldown"
    receipt: str | None = None


async def has_open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> bool:
    return await repository.open_attempt(session, invoice_id) is not None


@dataclass(frozen=True)
class PaymentInHand:
    """A payment of an unpaid invoice that must not be cut across: `open`, an attempt whose
    prompt may be on a phone; `checking`, one under a review that asks whether the customer
    paid (or paid another amount)."""

    state: Literal["open", "checking"]
    payment: Payment


async def payment_in_hand(session: AsyncSession, invoice_id: uuid.UUID) -> PaymentInHand | None:
    """While there is one, nobody is invited to pay the invoice again: no reminder, no Pay
    button in the customer's list of what they owe, no remind hint in `status`."""
    attempt = await repository.open_attempt(session, invoice_id)
    if attempt is not None:
        return PaymentInHand("open", attempt)
    for flagged in await repository.under_review_for_invoice(session, invoice_id):
        reason = flagged.review_reason or ""
        if any(question in reason for question in messages.MAY_HAVE_PAID_REASONS):
            return PaymentInHand("checking", flagged)
    return None


async def first_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await repository.first_success(session, invoice_id)


async def latest_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    """The invoice's newest attempt, whatever its status (the public page's status poll)."""
    return await repository.latest_for_invoice(session, invoice_id)


async def prompt_times_since(
    session: AsyncSession, invoice_id: uuid.UUID, since: datetime
) -> list[datetime]:
    return await repository.prompt_times_since(session, invoice_id, since)


async def prompt_times_as_other_payer(
    session: AsyncSession, phone: str, since: datetime
) -> list[datetime]:
    return await repository.prompt_times_as_other_payer(session, phone, since)


def failure_reason_for_payer(code: str | None) -> str:
    """Why an attempt failed, in the payer's plain words (never the provider's text)."""
    return messages.reasons(code)[0]


# Starting -------------------------------------------------------------------------------------


async def start_payment(
    session: AsyncSession, settings: Settings, *, invoice: Invoice, phone: str
) -> StartResult:
    """The checks of DESIGN §5 after "is this the customer", in order; then the attempt and
    its push job in the caller's transaction. No reply yet: the push handler says "check your
    phone" once Daraja accepts.

    The invoice row is held first and read afresh (`invoice` gets its current values), so a
    `cancel` at the same moment is either seen here or sees this attempt (invoices/service)."""
    held = await invoice_repository.hold_while_paying(session, invoice.id)
    assert held is not None  # invoices are never deleted
    invoice = held
    if invoice.status is InvoiceStatus.PAID:
        paid = await repository.first_success(session, invoice.id)
        return StartResult("paid", paid, receipt=paid.receipt_number if paid else None)
    if invoice.status is InvoiceStatus.CANCELLED:
        return StartResult("cancelled")
    open_attempt = await repository.open_attempt(session, invoice.id)
    if open_attempt is not None:
        return StartResult("open", open_attempt)
    await repository.serialize_phone(session, phone)
    wait, reason = await _seconds_to_wait(
        session, settings, phone=phone, amount_cents=invoice.amount_cents
    )
    if wait > 0:
        return StartResult("wait", wait_seconds=wait, wait_reason=reason)
    try:
        async with session.begin_nested():
            payment = await repository.add(
                session, invoice_id=invoice.id, phone=phone, amount_cents=invoice.amount_cents
            )
    except IntegrityError:  # a simultaneous tap won the one open slot
        return StartResult("open", await repository.open_attempt(session, invoice.id))
    await outbox.enqueue(session, PUSH_TOPIC, {"payment_id": str(payment.id)}, f"push:{payment.id}")
    # Due whatever becomes of the push (even a push row that dies unrun): no attempt stays
    # open for ever, blocking the invoice and the phone.
    await schedule_reconcile(session, payment, round_=0, delay=settings.reconcile_after)
    return StartResult("started", payment)


async def schedule_reconcile(
    session: AsyncSession, payment: Payment, *, round_: int, delay: float, key: str | None = None
) -> None:
    """`key` replaces the round's dedupe key (a row queued by the sweep, outside the rounds)."""
    await outbox.enqueue(
        session,
        RECONCILE_TOPIC,
        {"payment_id": str(payment.id), "round": round_},
        key or f"reconcile:{payment.id}:{round_}",
        not_before=utcnow() + timedelta(seconds=delay),
    )


async def _seconds_to_wait(
    session: AsyncSession, settings: Settings, *, phone: str, amount_cents: int
) -> tuple[int, WaitReason]:
    """How long before this phone may get another prompt (the longest wait), and why."""
    now = utcnow()
    waits = [0.0]
    last = await repository.last_attempt_at(session, phone=phone, amount_cents=amount_cents)
    if last is not None:
        waits.append(settings.pay_cooldown - (now - last).total_seconds())
    reason: WaitReason = "cooldown"
    unsettled = await repository.open_attempt_for_phone(session, phone)
    if unsettled is not None:  # a push whose outcome is still unknown: never stack another
        left = settings.reconcile_after - (now - unsettled.started_at).total_seconds()
        waits.append(max(5.0, left))
        # What the payer can do something about is the reason, however the seconds compare:
        # the prompt on their phone (answer it) or, past RECONCILE_AFTER, M-PESA being asked
        # how it ended (until RECONCILE_GIVE_UP, which no number of seconds can promise).
        reason = "prompt_open" if left > 0 else "checking"
    return int(max(waits) + 0.999), reason


def answer_lost(payment: Payment) -> bool:
    """The push went out a while ago and M-PESA's answer never came (or was lost): whether a
    prompt reached the phone is unknown until the reconciler settles the attempt."""
    if payment.checkout_request_id is not None or payment.push_sent_at is None:
        return False
    return utcnow() - payment.push_sent_at >= PUSH_ANSWER_WAIT


def nudge(settings: Settings, invoice: Invoice, payment: Payment) -> Outbound:
    """What a tap on an open attempt hears: "check your phone", or, when the push's answer
    was lost, that a prompt may have come and when Pay works again (RECONCILE_GIVE_UP after
    the push, when the attempt is given up)."""
    if payment.checkout_request_id is not None:
        return messages.check_phone(invoice)
    return messages.prompt_unsure(invoice, minutes=minutes_until_given_up(settings, payment))


def minutes_until_given_up(settings: Settings, payment: Payment) -> int:
    pushed = payment.push_sent_at or payment.started_at
    left = settings.reconcile_give_up - (utcnow() - pushed).total_seconds()
    return max(1, math.ceil(left / 60))


async def should_nudge(session: AsyncSession, payment: Payment) -> bool:
    """ "Check your phone" at most once a minute per invoice, and not while the push is on its
    way (its handler says it once Daraja accepts). A push whose answer was lost may still have
    raised the prompt, so once it is overdue the tapper hears it too, rather than silence.
    The attempt's row is locked first, so of simultaneous taps only the first sees no recent
    nudge (on SQLite every write transaction is serial anyway)."""
    if payment.invoice_id is None or payment.push_sent_at is None:
        return False
    if payment.checkout_request_id is None and not answer_lost(payment):
        return False
    await repository.get(session, payment.id, lock=True)
    last = await notifications.last_sent_at(
        session, invoice_id=payment.invoice_id, kind=messages.CHECK_PHONE_KIND
    )
    return last is None or utcnow() - last >= CHECK_PHONE_EVERY


# Outcomes -------------------------------------------------------------------------------------


async def record_accepted(
    session: AsyncSession,
    payment: Payment,
    *,
    checkout_request_id: str,
    merchant_request_id: str,
    request_body: dict[str, Any],
) -> bool:
    """Daraja accepted the push: store its ids (and the request, without its password).

    False when a success callback was already matched to this attempt by phone and amount yet
    the push's own answer names another id: both facts are kept for a person to look at."""
    known = payment.checkout_request_id
    if known is not None and known != checkout_request_id:
        await repository.set_values(session, payment.id, request_body=request_body)
        await review.flag(session, payment, messages.CHECKOUT_ID_DIFFERS_REASON)
        return False
    await repository.set_values(
        session,
        payment.id,
        checkout_request_id=checkout_request_id,
        merchant_request_id=merchant_request_id,
        request_body=request_body,
    )
    return True


async def tell_to_check_phone(session: AsyncSession, payment: Payment) -> None:
    """Once the push is accepted, unless its outcome is already known (a callback can
    overtake the push's own answer): nobody is sent to a prompt already answered."""
    if payment.status is not PaymentStatus.INITIATED or payment.callback_body is not None:
        return
    invoice = await invoice_of(session, payment)
    if invoice is not None:
        await notifications.send(
            session, to=payment.phone, message=messages.check_phone(invoice), invoice_id=invoice.id
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
    if not await _to_failed(session, payment, code=code, description=description):
        return False
    invoice = await invoice_of(session, payment)
    if invoice is None:
        return True
    business = await business_name(session, invoice)
    await notifications.send(
        session,
        to=payment.phone,
        message=messages.failure_for_customer(
            invoice,
            business_name=business,
            code=code,
            page_link=_page_for(settings, payment, invoice),
        ),
        invoice_id=invoice.id,
    )
    if tell_merchant:
        await review.tell_merchant(
            session,
            invoice,
            messages.failure_for_merchant(
                invoice, code=code, other_payer=payment.phone != invoice.customer_phone
            ),
        )
    return True


async def give_up(session: AsyncSession, settings: Settings, payment: Payment) -> bool:
    """RECONCILE_GIVE_UP has passed and M-PESA never said how the attempt ended: FAILED (no
    response), so the invoice stays payable; False if it was settled already.

    A push that went out but whose answer was lost has no CheckoutRequestID, so M-PESA could
    not be asked; with its callback lost too, the customer may have paid. That attempt is
    flagged for review (the flag tells the merchant), and the customer is told we could not
    confirm it rather than that it failed. A late success still wins (settlement, orphans)."""
    if payment.under_review:
        # A success claim flagged while open (another amount): the customer may have paid.
        return await give_up_unconfirmed(
            session, settings, payment, messages.CLAIM_UNCONFIRMED_REASON
        )
    blind = payment.checkout_request_id is None and payment.push_sent_at is not None
    if not blind:
        return await fail(session, settings, payment, code=repository.NO_RESPONSE)
    return await give_up_unconfirmed(session, settings, payment, messages.OUTCOME_UNKNOWN_REASON)


async def give_up_unconfirmed(
    session: AsyncSession, settings: Settings, payment: Payment, reason: str
) -> bool:
    """M-PESA never said how an attempt the customer may have paid ended: FAILED (no response),
    so neither the invoice nor the phone stays blocked; flagged for review with `reason` (the
    flag tells the merchant); the customer told we could not confirm it, not to pay again if
    M-PESA sent them a confirmation. A late success still wins (FAILED → SUCCESS)."""
    if not await _to_failed(session, payment, code=repository.NO_RESPONSE):
        return False
    await review.flag(session, payment, reason)
    invoice = await invoice_of(session, payment)
    if invoice is not None:
        business = await business_name(session, invoice)
        await notifications.send(
            session,
            to=payment.phone,
            message=messages.unconfirmed_for_customer(
                invoice, business_name=business, page_link=_page_for(settings, payment, invoice)
            ),
            invoice_id=invoice.id,
        )
    return True


def _page_for(settings: Settings, payment: Payment, invoice: Invoice) -> str | None:
    """The invoice's page for a payer who is not its customer (they paid from the page with
    another number, and its Pay button would refuse them); None for the customer."""
    if payment.phone == invoice.customer_phone:
        return None
    return invoice_link(settings.base_url, invoice)


async def withdraw(session: AsyncSession, payment: Payment) -> bool:
    """An attempt whose push never went out, on an invoice no longer payable: FAILED, nobody
    told (the invoice's own news, paid or cancelled, went out already)."""
    return await _to_failed(session, payment, code=repository.NOT_PAYABLE)


def outcome_unknown(payment: Payment) -> bool:
    """Given up without M-PESA ever saying how it ended, though the customer may have paid."""
    reason = payment.review_reason or ""
    return (
        payment.status is PaymentStatus.FAILED
        and payment.result_code == repository.NO_RESPONSE
        and any(question in reason for question in messages.UNCONFIRMED_REASONS)
    )


async def _to_failed(
    session: AsyncSession, payment: Payment, *, code: str, description: str | None = None
) -> bool:
    try:
        await PAYMENT_TRANSITIONS.apply(
            session,
            Payment,
            payment.id,
            PaymentStatus.FAILED,
            source=PaymentStatus.INITIATED,
            values={
                "result_code": code[:32],
                "result_desc": description[:255] if description else None,
                "completed_at": utcnow(),
            },
        )
    except TransitionRefused:
        return False
    return True


# The Pay button -------------------------------------------------------------------------------


async def tap_to_pay(
    session: AsyncSession, settings: Settings, *, phone: str, number: str
) -> list[Outbound]:
    """A tap on **Pay with M-PESA**: the replies to the tapper (often none: the push handler
    says "check your phone" once Daraja accepts)."""
    invoice = await invoice_repository.get_by_number(session, number)
    if invoice is None or invoice.customer_phone != phone:
        # The same words whether the invoice exists or not: nothing about it or its customer.
        return [messages.refusal(messages.NOT_YOURS)]
    result = await start_payment(session, settings, invoice=invoice, phone=phone)
    if result.outcome == "paid":
        return [messages.already_paid(number, receipt=result.receipt)]
    if result.outcome == "cancelled":
        return [messages.refusal(messages.CANCELLED.format(number=number))]
    if result.outcome == "open":
        if result.payment is not None and result.payment.phone != phone:
            # Someone paying from the page with another number: their prompt, not this phone's.
            return [messages.other_payer(invoice, result.payment.phone)]
        if result.payment is not None and await should_nudge(session, result.payment):
            # Sent here rather than returned, so the message log ties it to the invoice and
            # the once-a-minute rule sees it.
            await notifications.send(
                session,
                to=phone,
                message=nudge(settings, invoice, result.payment),
                invoice_id=invoice.id,
            )
        return []
    if result.outcome == "wait":
        return [messages.wait(result.wait_reason, result.wait_seconds, number=invoice.number)]
    return []
