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


async def lock_for_status_change(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    """The invoice read afresh, its row locked FOR UPDATE until the transaction ends.

    `cancel` takes it before it looks for an open payment attempt; a Pay tap holds the row
    with `hold_while_paying` before it checks the invoice is payable. So the two run one after
    the other and the second sees what the first did: never a cancelled invoice with a push on
    its way. SQLite runs one write transaction at a time (BEGIN IMMEDIATE, db/engine.py) and
    ignores FOR UPDATE.
    """
    return await session.scalar(_fresh(invoice_id).with_for_update())


async def hold_while_paying(session: AsyncSession, invoice_id: uuid.UUID) -> Invoice | None:
    """The invoice read afresh, its row held FOR KEY SHARE until the transaction ends.

    Enough to wait for (and then see) a cancel that holds it FOR UPDATE, or to make the cancel
    wait; unlike FOR UPDATE it does not conflict with the plain UPDATE that marks the invoice
    PAID, which the reconciler runs while it holds the payment's row, so a tap that goes on to
    lock that payment (the "check your phone" nudge) cannot deadlock with it. Inserting the
    payment takes the same lock anyway, for its foreign key.
    https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-ROWS
    """
    return await session.scalar(_fresh(invoice_id).with_for_update(read=True, key_share=True))


def _fresh(invoice_id: uuid.UUID) -> sa.Select[Invoice]:
    # populate_existing: an Invoice already loaded in the session gets the locked row's values.
    return (
        sa.select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)
    )


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
