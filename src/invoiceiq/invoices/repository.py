"""Invoice SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.numbering import new_invoice_number, new_public_token
from invoiceiq.invoices.states import InvoiceStatus

UNPAID = (InvoiceStatus.PENDING, InvoiceStatus.SENT)
_NUMBER_DRAWS = 5


async def insert(session: AsyncSession, values: dict[str, Any]) -> Invoice:
    """Insert with a fresh number; on the rare collision, draw again inside a savepoint."""
    for attempt in range(_NUMBER_DRAWS):
        invoice = Invoice(number=new_invoice_number(), public_token=new_public_token(), **values)
        try:
            async with session.begin_nested():
                session.add(invoice)
                await session.flush()
        except IntegrityError:
            if attempt == _NUMBER_DRAWS - 1:
                raise
            continue
        return invoice
    raise AssertionError("unreachable")


async def get_by_number(session: AsyncSession, number: str) -> Invoice | None:
    return await session.scalar(sa.select(Invoice).where(Invoice.number == number))


async def get_by_token(session: AsyncSession, token: str) -> Invoice | None:
    return await session.scalar(sa.select(Invoice).where(Invoice.public_token == token))


async def get(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    return await session.get(Invoice, invoice_id)


async def unpaid_for_merchant(
    session: AsyncSession, merchant_id: uuid.UUID, *, limit: int
) -> list[Invoice]:
    return list(
        await session.scalars(
            sa.select(Invoice)
            .where(Invoice.merchant_id == merchant_id, Invoice.status.in_(UNPAID))
            .order_by(Invoice.created_at.desc())
            .limit(limit)
        )
    )


async def count_unpaid_for_merchant(session: AsyncSession, merchant_id: uuid.UUID) -> int:
    count = await session.scalar(
        sa.select(sa.func.count())
        .select_from(Invoice)
        .where(Invoice.merchant_id == merchant_id, Invoice.status.in_(UNPAID))
    )
    return int(count or 0)


async def unpaid_for_customer(session: AsyncSession, phone: str, *, limit: int) -> list[Invoice]:
    return list(
        await session.scalars(
            sa.select(Invoice)
            .where(Invoice.customer_phone == phone, Invoice.status.in_(UNPAID))
            .order_by(Invoice.created_at.desc())
            .limit(limit)
        )
    )


async def page_for_merchant(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: InvoiceStatus | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Invoice]:
    """Newest first, keyset-paginated on (created_at, id): stable while invoices are added."""
    query = sa.select(Invoice).where(Invoice.merchant_id == merchant_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    if after is not None:
        created_at, invoice_id = after
        query = query.where(
            sa.or_(
                Invoice.created_at < created_at,
                sa.and_(Invoice.created_at == created_at, Invoice.id < invoice_id),
            )
        )
    order = (Invoice.created_at.desc(), Invoice.id.desc())
    return list(await session.scalars(query.order_by(*order).limit(limit)))


async def set_values(session: AsyncSession, invoice_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        sa.update(Invoice)
        .where(Invoice.id == invoice_id)
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )


async def claim_reminder(
    session: AsyncSession, invoice_id: uuid.UUID, *, seen: datetime | None, at: datetime
) -> bool:
    """Record a reminder only if nobody did since `seen` was read: two at once send one."""
    unchanged = (
        Invoice.last_reminded_at.is_(None) if seen is None else Invoice.last_reminded_at == seen
    )
    result = await session.execute(
        sa.update(Invoice)
        .where(Invoice.id == invoice_id, unchanged)
        .values(last_reminded_at=at)
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
