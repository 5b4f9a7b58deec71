"""Payment use cases."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.payments import repository
from invoiceiq.payments.models import Payment


async def has_open_attempt(session: AsyncSession, invoice_id: uuid.UUID) -> bool:
    return await repository.open_attempt(session, invoice_id) is not None


async def latest_success(session: AsyncSession, invoice_id: uuid.UUID) -> Payment | None:
    return await repository.latest_success(session, invoice_id)
