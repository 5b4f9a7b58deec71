"""The sweep: no payment attempt stays open for want of a job to settle it.

An open attempt blocks its invoice (no second attempt, no cancel) and its customer's phone
("try again in N seconds"). Its push, reconcile and confirmation rows settle it; but a row can
die before it does, after OUTBOX_MAX_ATTEMPTS failures (a database outage of a few minutes, say).
The worker runs this sweep every so often: an attempt open past RECONCILE_GIVE_UP with none of
those rows still to run gets one more, which settles it by STK Query or gives it up, as the dead
row would have. A confirmation row that dies on an attempt no longer open (a late success claim
on one given up) leaves no open attempt to find: its death flags the payment for a person.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.outbox import service as outbox
from invoiceiq.payments import messages, repository, review, service, settlement
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus

log = logging.getLogger(__name__)

# The jobs that settle an open attempt; each row carries its `payment_id`.
SETTLING_TOPICS = (service.PUSH_TOPIC, service.RECONCILE_TOPIC, service.CONFIRM_TOPIC)
# Attempts looked at per sweep; the rest wait for the next one.
SWEEP_BATCH = 100


async def resume_stuck(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Queue the job an open attempt lacks, for up to SWEEP_BATCH attempts; how many got one."""
    cutoff = now - timedelta(seconds=settings.reconcile_give_up)
    resumed = 0
    after: tuple[datetime, uuid.UUID] | None = None
    while resumed < SWEEP_BATCH:
        # Overdue attempts whose jobs are still in hand come first when they are older, so
        # the sweep pages past them rather than looking at the oldest page only.
        overdue = await repository.overdue_open(
            session, started_before=cutoff, limit=SWEEP_BATCH, after=after
        )
        if not overdue:
            break
        last = overdue[-1]
        after = (last.started_at, last.id)
        in_hand = await outbox.live_payload_values(
            session,
            topics=SETTLING_TOPICS,
            field="payment_id",
            values=[str(payment.id) for payment in overdue],
        )
        for payment in overdue:
            if str(payment.id) in in_hand or resumed == SWEEP_BATCH:
                continue
            await _queue_settling_job(session, payment, now=now)
            resumed += 1
    return resumed


async def _queue_settling_job(session: AsyncSession, payment: Payment, *, now: datetime) -> None:
    key = f"sweep:{payment.id}:{now.isoformat()}"
    started = payment.started_at
    if settlement.awaits_confirmation(payment):
        # Its claim's time died with the row: counted from the push, so it is overdue, asked
        # once, and confirmed, denied or given up as unconfirmed.
        await settlement.schedule_confirmation(
            session, payment, round_=0, claimed_at=started.isoformat(), key=key
        )
    else:
        await service.schedule_reconcile(session, payment, round_=0, delay=0, key=key)
    log.warning(
        "open payment attempt had no job left to settle it; one queued",
        extra={"payment": str(payment.id)},
    )


async def claim_left_unconfirmed(session: AsyncSession, payload: dict[str, Any]) -> None:
    """A confirmation row died (retries used up): a success claim on an attempt given up
    before it came has no job left to confirm it, nor does the sweep look at closed attempts,
    so it is flagged (its merchant told, `payments review` lists it). An open attempt is left
    to the sweep."""
    payment = await repository.get(session, uuid.UUID(payload["payment_id"]), lock=True)
    if payment is not None and payment.status is PaymentStatus.FAILED:
        await review.flag(session, payment, messages.CLAIM_UNCONFIRMED_REASON)
