"""Payment SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus


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


async def by_checkout_id(
    session: AsyncSession, checkout_request_id: str, *, lock: bool = False
) -> Payment | None:
    query = sa.select(Payment).where(Payment.checkout_request_id == checkout_request_id)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def by_receipt(session: AsyncSession, receipt: str) -> Payment | None:
    return await session.scalar(sa.select(Payment).where(Payment.receipt_number == receipt))


async def open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment).where(
            Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.INITIATED
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


async def last_attempt_at(
    session: AsyncSession, *, phone: str, amount_cents: int
) -> datetime | None:
    """When this phone was last asked for this amount (M-PESA's own repeat rule, code 17)."""
    return await session.scalar(
        sa.select(sa.func.max(sa.func.coalesce(Payment.push_sent_at, Payment.created_at))).where(
            Payment.phone == phone, Payment.amount_cents == amount_cents
        )
    )


async def latest_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment)
        .where(Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.SUCCESS)
        .order_by(Payment.completed_at.desc())
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
        .execution_options(synchronize_session="fetch")
    )


async def orphan_candidates(
    session: AsyncSession, *, phone: str, amount_cents: int, since: datetime
) -> list[Payment]:
    """Attempts whose push went out without a stored CheckoutRequestID (an ambiguous push)."""
    return list(
        await session.scalars(
            sa.select(Payment).where(
                Payment.phone == phone,
                Payment.amount_cents == amount_cents,
                Payment.checkout_request_id.is_(None),
                Payment.push_sent_at >= since,
                Payment.invoice_id.is_not(None),
            )
        )
    )


async def flagged(session: AsyncSession, *, include_resolved: bool = False) -> list[Payment]:
    query = sa.select(Payment).where(Payment.needs_review.is_(True)).order_by(Payment.created_at)
    if not include_resolved:
        query = query.where(Payment.reviewed_at.is_(None))
    return list(await session.scalars(query))
