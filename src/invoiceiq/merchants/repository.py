"""Merchant SQL."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.upsert import insert_if_absent
from invoiceiq.merchants.models import Merchant


async def get_by_phone(session: AsyncSession, phone: str, *, lock: bool = False) -> Merchant | None:
    query = sa.select(Merchant).where(Merchant.phone == phone)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def get(session: AsyncSession, merchant_id: uuid.UUID) -> Merchant | None:
    return await session.get(Merchant, merchant_id)


async def insert_if_absent_by_phone(session: AsyncSession, values: dict[str, Any]) -> bool:
    return await insert_if_absent(session, Merchant, values, conflict_on=["phone"])


async def update(session: AsyncSession, merchant_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        sa.update(Merchant)
        .where(Merchant.id == merchant_id)
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
