"""Payment SQL."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus


async def open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment).where(
            Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.INITIATED
        )
    )


async def latest_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await session.scalar(
        sa.select(Payment)
        .where(Payment.invoice_id == invoice_id, Payment.status == PaymentStatus.SUCCESS)
        .order_by(Payment.completed_at.desc())
        .limit(1)
    )
