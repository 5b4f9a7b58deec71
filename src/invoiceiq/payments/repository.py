"""Payment SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from invoiceiq.invoices.models import Invoice
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus

# The result code of an attempt given up on because M-PESA never said how it ended.
NO_RESPONSE = "no_response"
# The result code of an attempt withdrawn before its push, the invoice paid or cancelled meanwhile.
NOT_PAYABLE = "not_payable"


async def add(session: AsyncSession, **values: Any) -> Payment:
    payment = Payment(**values)
    session.add(payment)
    await session.flush()
    return payment


async def get(
    session: AsyncSession, payment_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    query = sa.select(Payment).where(Payment.id == payment_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def overdue_open(
    session: AsyncSession,
    *,
    started_before: datetime,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[Payment]:
    """Open attempts pushed (or, never pushed, created) before `started_before`, oldest first
    and after `after` (the start and id of the last one of the page before), locked; on
    PostgreSQL an attempt another transaction holds is skipped, not waited for."""
    started = Payment.started_at
    query = (
        sa.select(Payment)
        .where(Payment.status == PaymentStatus.INITIATED, started < started_before)
        .order_by(started, Payment.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        query = query.where(sa.tuple_(started, Payment.id) > sa.tuple_(*after))
    return list(await session.scalars(query))


async def by_checkout_id(
    session: AsyncSession, checkout_request_id: str, *, lock: bool = False
) -> Payment | None:
    query = sa.select(Payment).where(Payment.checkout_request_id == checkout_request_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def serialize_checkout(session: AsyncSession, checkout_request_id: str) -> None:
    """Hold a lock on this CheckoutRequestID until the transaction ends (PostgreSQL).

    The push handler stores the id and then looks for callbacks that came first; the callback
    stores itself and then looks for the id. Under READ COMMITTED each can miss the other's
    uncommitted write, and the callback would wait for the reconciler. Both take this lock
    before they look, so the second one sees the first one's work. SQLite runs one write
    transaction at a time (BEGIN IMMEDIATE, db/engine.py), so it needs nothing.
    """
    await _hold(session, checkout_request_id)


async def serialize_phone(session: AsyncSession, phone: str) -> None:
    """Hold a lock on this payer's number until the transaction ends (PostgreSQL): taps on two
    invoices at once each read "no open attempt for this phone" before either inserts one, and
    would raise two prompts; the second waits here and then sees the first one's attempt."""
    await _hold(session, f"phone:{phone}")


async def _hold(session: AsyncSession, key: str) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))


async def by_receipt(session: AsyncSession, receipt: str) -> Payment | None:
    return await session.scalar(sa.select(Payment).where(Payment.receipt_number == receipt))


async def open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment).where(
            Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.INITIATED
        )
    )


async def under_review_for_invoice(session: AsyncSession, invoice_id: uuid.UUID) -> list[Payment]:
    """The invoice's attempts flagged for review and not yet reviewed, newest first."""
    return list(
        await session.scalars(
            sa.select(Payment)
            .where(
                Payment.invoice_id == invoice_id,
                Payment.needs_review.is_(True),
                Payment.reviewed_at.is_(None),
            )
            .order_by(Payment.created_at.desc())
        )
    )


async def open_attempt_for_phone(session: AsyncSession, phone: str) -> Payment | None:
    """Any attempt of this phone still waiting for its outcome (on any invoice)."""
    return await session.scalar(
        sa.select(Payment)
        .where(Payment.phone == phone, Payment.status == PaymentStatus.INITIATED)
        .order_by(Payment.created_at.desc())
        .limit(1)
    )


def _may_have_prompted() -> sa.ColumnElement[bool]:
    """An attempt that may have raised a PIN prompt: open, settled by M-PESA (it has a
    CheckoutRequestID), or pushed and given up without an answer (its push may have gone
    through). Only a push Daraja refused, or one never sent, raised none."""
    return sa.or_(
        Payment.checkout_request_id.is_not(None),
        Payment.status != PaymentStatus.FAILED,
        sa.and_(Payment.result_code == NO_RESPONSE, Payment.push_sent_at.is_not(None)),
    )


async def last_attempt_at(
    session: AsyncSession, *, phone: str, amount_cents: int
) -> datetime | None:
    """When this phone was last asked for this amount (M-PESA's own repeat rule, code 17).

    A push Daraja refused (a failed attempt that never got a CheckoutRequestID: another prompt
    open, an invalid request, M-PESA unreachable) raised no prompt, so it does not count:
    the customer told "finish the other prompt, then tap Pay again" is not then told to wait.
    One whose answer was lost (given up, no response) may have raised one, so it counts.
    """
    return await session.scalar(
        sa.select(sa.func.max(Payment.started_at)).where(
            Payment.phone == phone,
            Payment.amount_cents == amount_cents,
            _may_have_prompted(),
        )
    )


async def first_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    """The payment that paid the invoice: the one completed when it was marked paid (the two
    times are one value), else the first success (any later one is a double payment, flagged
    for review); on a cancelled invoice, the first money that came anyway."""
    paid_it = sa.case((Payment.completed_at == Invoice.paid_at, 0), else_=1)
    return await session.scalar(
        sa.select(Payment)
        .join(Invoice, Invoice.id == Payment.invoice_id)
        .where(Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.SUCCESS)
        .order_by(paid_it, Payment.completed_at, Payment.id)
        .limit(1)
    )


async def claim_push(session: AsyncSession, payment_id: uuid.UUID, *, at: datetime) -> bool:
    """Record "push sent at" once; False when it was already recorded or the attempt is over."""
    result = await session.execute(
        sa.update(Payment)
        .where(
            Payment.id == payment_id,
            Payment.status == PaymentStatus.INITIATED,
            Payment.push_sent_at.is_(None),
        )
        .values(push_sent_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def unclaim_push(session: AsyncSession, payment_id: uuid.UUID) -> None:
    """Only after a failure that certainly never reached Daraja (connect error, throttling)."""
    await session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.checkout_request_id.is_(None))
        .values(push_sent_at=None)
        .execution_options(synchronize_session=False)
    )


async def set_values(session: AsyncSession, payment_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    # The attempt loaded in this session gets the new values too, every one of them (the
    # "fetch" strategy skips attributes that were never loaded, such as a new row's NULLs).
    loaded = session.sync_session.identity_map.get(
        session.sync_session.identity_key(Payment, payment_id)
    )
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)


async def orphan_candidates(
    session: AsyncSession, *, phone: str, amount_cents: int, since: datetime
) -> list[Payment]:
    """Attempts whose push went out without a stored CheckoutRequestID (an ambiguous push),
    pushed since `since`: still open, or failed only because no answer came. One given up
    since `since` counts too: it is given up only once its push is older than the window, and
    its money, if M-PESA took any, is what a success coming after that most likely is. An
    attempt Daraja refused (failed with another code) raised no prompt, so no money can
    belong to it."""
    return list(
        await session.scalars(
            sa.select(Payment).where(
                Payment.phone == phone,
                Payment.amount_cents == amount_cents,
                Payment.checkout_request_id.is_(None),
                Payment.push_sent_at.is_not(None),
                Payment.invoice_id.is_not(None),
                sa.or_(
                    sa.and_(
                        Payment.status == PaymentStatus.INITIATED, Payment.push_sent_at >= since
                    ),
                    sa.and_(
                        Payment.status == PaymentStatus.FAILED,
                        Payment.result_code == NO_RESPONSE,
                        sa.or_(Payment.push_sent_at >= since, Payment.completed_at >= since),
                    ),
                ),
            )
        )
    )


async def latest_for_invoice(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment)
        .where(Payment.invoice_id == invoice_id)
        .order_by(Payment.created_at.desc())
        .limit(1)
    )


async def prompt_times_since(
    session: AsyncSession, invoice_id: uuid.UUID, since: datetime
) -> list[datetime]:
    """When this invoice's attempts since `since` were made, oldest first; an attempt Daraja
    refused without raising a prompt does not count (the web page's per-invoice limit)."""
    return await _prompt_times(session, since, Payment.invoice_id == invoice_id)


async def prompt_times_as_other_payer(
    session: AsyncSession, phone: str, since: datetime
) -> list[datetime]:
    """When attempts since `since` went to `phone` for invoices of other customers (paying
    for someone from the web page), oldest first, counted as `prompt_times_since` does."""
    return await _prompt_times(
        session, since, Payment.phone == phone, Invoice.customer_phone != phone, by_invoice=True
    )


async def _prompt_times(
    session: AsyncSession,
    since: datetime,
    *which: sa.ColumnElement[bool],
    by_invoice: bool = False,
) -> list[datetime]:
    """`by_invoice`: `which` looks at the attempt's invoice too."""
    query = sa.select(Payment.created_at)
    if by_invoice:
        query = query.join(Invoice, Invoice.id == Payment.invoice_id)
    return list(
        await session.scalars(
            query.where(*which, Payment.created_at >= since, _may_have_prompted()).order_by(
                Payment.created_at
            )
        )
    )


async def flagged(
    session: AsyncSession, *, include_resolved: bool = False
) -> list[tuple[Payment, str | None]]:
    """Payments flagged for review, oldest first, each with its invoice number (None for money
    that matched no attempt)."""
    query = (
        sa.select(Payment, Invoice.number)
        .outerjoin(Invoice, Invoice.id == Payment.invoice_id)
        .where(Payment.needs_review.is_(True))
        .order_by(Payment.created_at)
    )
    if not include_resolved:
        query = query.where(Payment.reviewed_at.is_(None))
    return [(payment, number) for payment, number in (await session.execute(query)).all()]
