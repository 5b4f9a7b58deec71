"""Customer SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.customers.models import Customer
from invoiceiq.db.upsert import insert_if_absent


async def get(session: AsyncSession, *, merchant_id: uuid.UUID, phone: str) -> Customer | None:
    return await session.scalar(
        sa.select(Customer).where(Customer.merchant_id == merchant_id, Customer.phone == phone)
    )


async def insert_if_absent_for_merchant(
    session: AsyncSession, *, merchant_id: uuid.UUID, phone: str, name: str | None
) -> bool:
    return await insert_if_absent(
        session,
        Customer,
        {"merchant_id": merchant_id, "phone": phone, "name": name},
        conflict_on=["merchant_id", "phone"],
    )


async def set_name(session: AsyncSession, customer_id: uuid.UUID, name: str) -> None:
    await session.execute(
        sa.update(Customer)
        .where(Customer.id == customer_id)
        .values(name=name)
        .execution_options(synchronize_session="fetch")
    )


async def find_by_names(
    session: AsyncSession, *, merchant_id: uuid.UUID, names: list[str], limit: int = 5
) -> dict[str, list[Customer]]:
    """For each of `names` (as given), this merchant's customers saved under it whatever its
    case, newest first, at most `limit`: one read of the address book for them all.

    Compared in Python (casefold): SQLite's lower(), and PostgreSQL's under the C locale, fold
    only ASCII, so a saved "Émile" would never be found. A merchant's address book is small,
    and the lookup runs only for `invoice <saved name> …`."""
    named = list(
        await session.scalars(
            sa.select(Customer)
            .where(Customer.merchant_id == merchant_id, Customer.name.is_not(None))
            .order_by(Customer.updated_at.desc())
        )
    )
    found: dict[str, list[Customer]] = {}
    for name in names:
        wanted = name.casefold()
        found[name] = [c for c in named if (c.name or "").casefold() == wanted][:limit]
    return found


async def touch_inbound(session: AsyncSession, phone: str, at: datetime) -> None:
    await session.execute(
        sa.update(Customer)
        .where(Customer.phone == phone)
        .values(last_inbound_at=at)
        .execution_options(synchronize_session=False)
    )


async def set_opted_out(session: AsyncSession, phone: str, at: datetime | None) -> int:
    result = await session.execute(
        sa.update(Customer)
        .where(Customer.phone == phone)
        .values(opted_out_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def is_opted_out(session: AsyncSession, phone: str) -> bool:
    found = await session.scalar(
        sa.select(Customer.id)
        .where(Customer.phone == phone, Customer.opted_out_at.is_not(None))
        .limit(1)
    )
    return found is not None
