"""The sweep (payments/sweep.py): an open attempt whose settling rows all died still ends.

Without it, an attempt whose reconcile (or confirmation) row died, after OUTBOX_MAX_ATTEMPTS
failures in a database outage say, stays INITIATED for good: its invoice cannot be paid again
or cancelled, and its customer's phone waits "N seconds" for ever.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import MessageLog, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.handlers import ON_DEAD
from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.outbox.service import enqueue
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.payments import messages, repository, service
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.payments.sweep import SWEEP_BATCH, resume_stuck
from invoiceiq.worker import Worker, WorkerOptions
from payments.flows import callback_body, fake_prompt
from payments.test_give_up import PendingDaraja
from support import factories


async def open_attempt(
    sessions: SessionFactory, settings: Settings, *, pushed_ago: float, **values: Any
) -> Payment:
    async with unit_of_work(sessions) as session:
        return await factories.payment(
            session,
            checkout_request_id=values.pop("checkout_request_id", f"ws_CO_{uuid.uuid4().hex}"),
            push_sent_at=utcnow() - timedelta(seconds=pushed_ago),
            **values,
        )


async def sweep(sessions: SessionFactory, settings: Settings) -> int:
    async with unit_of_work(sessions) as session:
        return await resume_stuck(session, settings, now=utcnow())


async def rows_about(sessions: SessionFactory, payment: Payment) -> list[OutboxMessage]:
    async with sessions() as session:
        rows = await session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.created_at))
        return [row for row in rows if row.payload.get("payment_id") == str(payment.id)]


async def add_row(
    sessions: SessionFactory, payment: Payment, topic: str, status: OutboxStatus
) -> None:
    async with unit_of_work(sessions) as session:
        session.add(
            OutboxMessage(
                topic=topic,
                payload={"payment_id": str(payment.id), "round": 3},
                dedupe_key=f"{topic}:{payment.id}:3",
                status=status,
            )
        )


def claimed(row: OutboxMessage) -> ClaimedRow:
    return ClaimedRow(row.id, row.topic, row.payload, 1, "t")


async def test_an_open_attempt_with_no_job_left_gets_one_reconcile_due_now(
    sessions: SessionFactory, settings: Settings
) -> None:
    payment = await open_attempt(sessions, settings, pushed_ago=settings.reconcile_give_up + 5)
    before = utcnow()

    assert await sweep(sessions, settings) == 1
    assert await sweep(sessions, settings) == 0  # the row it queued is in hand now

    [row] = await rows_about(sessions, payment)
    assert row.topic == service.RECONCILE_TOPIC and row.status is OutboxStatus.PENDING
    assert row.available_at <= utcnow() and row.available_at >= before - timedelta(seconds=1)


@pytest.mark.parametrize("status", [OutboxStatus.PENDING, OutboxStatus.RUNNING])
@pytest.mark.parametrize(
    "topic", [service.PUSH_TOPIC, service.RECONCILE_TOPIC, service.CONFIRM_TOPIC]
)
async def test_an_attempt_with_a_job_still_to_run_is_left_to_it(
    sessions: SessionFactory, settings: Settings, topic: str, status: OutboxStatus
) -> None:
    payment = await open_attempt(sessions, settings, pushed_ago=settings.reconcile_give_up + 5)
    await add_row(sessions, payment, topic, status)

    assert await sweep(sessions, settings) == 0
    assert len(await rows_about(sessions, payment)) == 1


@pytest.mark.parametrize("status", [OutboxStatus.DEAD, OutboxStatus.DONE])
async def test_a_dead_or_done_job_does_not_count(
    sessions: SessionFactory, settings: Settings, status: OutboxStatus
) -> None:
    payment = await open_attempt(sessions, settings, pushed_ago=settings.reconcile_give_up + 5)
    await add_row(sessions, payment, service.RECONCILE_TOPIC, status)

    assert await sweep(sessions, settings) == 1
    assert [row.status for row in await rows_about(sessions, payment)] == [
        status,
        OutboxStatus.PENDING,
    ]


async def test_attempts_not_yet_overdue_or_settled_are_left_alone(
    sessions: SessionFactory, settings: Settings
) -> None:
    recent = await open_attempt(sessions, settings, pushed_ago=settings.reconcile_give_up - 5)
    old = settings.reconcile_give_up + 5
    failed = await open_attempt(sessions, settings, pushed_ago=old, status=PaymentStatus.FAILED)
    paid = await open_attempt(sessions, settings, pushed_ago=old, status=PaymentStatus.SUCCESS)

    assert await sweep(sessions, settings) == 0
    for payment in (recent, failed, paid):
        assert await rows_about(sessions, payment) == []


async def test_a_never_pushed_attempt_counts_from_when_it_was_made(
    sessions: SessionFactory, settings: Settings
) -> None:
    long_ago = utcnow() - timedelta(seconds=settings.reconcile_give_up + 5)
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(session, created_at=long_ago)
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]

    assert await sweep(sessions, settings) == 1
    [row] = await rows_about(sessions, payment)
    await jobs.reconcile(claimed(row))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NO_RESPONSE


async def test_the_queued_reconcile_settles_the_attempt_once(
    sessions: SessionFactory, settings: Settings
) -> None:
    payment = await open_attempt(sessions, settings, pushed_ago=settings.reconcile_give_up + 5)
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]
    await sweep(sessions, settings)
    [row] = await rows_about(sessions, payment)

    await jobs.reconcile(claimed(row))
    await jobs.reconcile(claimed(row))  # at least once: a re-run changes nothing

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    # Still "being processed" past RECONCILE_GIVE_UP: given up, and the phone is free again.
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NO_RESPONSE
    assert await sweep(sessions, settings) == 0


async def test_an_unconfirmed_success_claim_gets_its_confirmation_job_back(
    sessions: SessionFactory, settings: Settings
) -> None:
    prompt = fake_prompt(amount=1500)
    payment = await open_attempt(
        sessions,
        settings,
        pushed_ago=settings.reconcile_give_up + 5,
        checkout_request_id=prompt["checkout_request_id"],
        amount_cents=150_000,
        callback_body=callback_body(prompt),
    )
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]

    assert await sweep(sessions, settings) == 1
    [row] = await rows_about(sessions, payment)
    assert row.topic == service.CONFIRM_TOPIC
    assert payment.push_sent_at is not None
    assert datetime.fromisoformat(row.payload["claimed_at"]) == payment.push_sent_at
    # The reconciler would tell a customer who may have paid to pay again; this job does not.
    await jobs.confirm(claimed(row))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.needs_review and fresh.review_reason == messages.CLAIM_UNCONFIRMED_REASON


async def test_one_sweep_takes_a_batch_and_the_next_the_rest(
    sessions: SessionFactory, settings: Settings
) -> None:
    old = settings.reconcile_give_up + 5
    async with unit_of_work(sessions) as session:
        for _ in range(SWEEP_BATCH + 2):
            invoice = await factories.invoice(session)
            await factories.payment(
                session, invoice=invoice, push_sent_at=utcnow() - timedelta(seconds=old)
            )

    assert await sweep(sessions, settings) == SWEEP_BATCH
    assert await sweep(sessions, settings) == 2
    assert await sweep(sessions, settings) == 0


@pytest.mark.parametrize("status", [PaymentStatus.FAILED, PaymentStatus.INITIATED])
async def test_a_confirmation_that_dies_on_an_attempt_given_up_flags_it_for_a_person(
    sessions: SessionFactory, settings: Settings, status: PaymentStatus
) -> None:
    """A late success claim on an attempt given up has only its confirmation row: when that
    dies, the sweep (open attempts only) would never find it, so its death flags the payment
    and tells the merchant. An open attempt's is left to the sweep."""
    payment = await open_attempt(sessions, settings, pushed_ago=1, status=status)
    async with unit_of_work(sessions) as session:
        await enqueue(session, service.CONFIRM_TOPIC, {"payment_id": str(payment.id)}, "c")

    async def database_down(row: ClaimedRow) -> None:
        raise ConnectionError("database unreachable")

    worker = Worker(
        sessions,
        {service.CONFIRM_TOPIC: database_down},
        WorkerOptions(max_attempts=1),
        on_dead=ON_DEAD,
    )
    await worker.run_until_idle()

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        alerts = await session.scalars(
            sa.select(MessageLog).where(MessageLog.kind == "review_alert")
        )
        told = list(alerts)
    assert fresh is not None and fresh.status is status
    if status is PaymentStatus.FAILED:
        assert fresh.needs_review and fresh.review_reason == messages.CLAIM_UNCONFIRMED_REASON
        assert len(told) == 1
    else:
        assert not fresh.needs_review and told == []
