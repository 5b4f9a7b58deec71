"""Customer use cases: the address book, the 24-hour window and STOP/START."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.customers import repository
from invoiceiq.customers.models import Customer
from invoiceiq.kit.clock import utcnow


async def remember(
    session: AsyncSession, *, merchant_id: uuid.UUID, phone: str, name: str | None
) -> Customer:
    """The merchant's entry for this phone, created if new; a name given now is kept."""
    await repository.insert_if_absent_for_merchant(
        session, merchant_id=merchant_id, phone=phone, name=name
    )
    customer = await repository.get(session, merchant_id=merchant_id, phone=phone)
    assert customer is not None
    if name and customer.name != name:
        await repository.set_name(session, customer.id, name)
    return customer


async def find_by_names(
    session: AsyncSession, *, merchant_id: uuid.UUID, names: list[str]
) -> dict[str, list[Customer]]:
    return await repository.find_by_names(session, merchant_id=merchant_id, names=names)


async def saved_name(session: AsyncSession, *, merchant_id: uuid.UUID, phone: str) -> str | None:
    """The name this merchant saved for `phone`, which an invoice without a name gets."""
    customer = await repository.get(session, merchant_id=merchant_id, phone=phone)
    return customer.name if customer else None


async def record_inbound(session: AsyncSession, phone: str) -> None:
    """Keep "last wrote to the business" on the phone's address-book entries."""
    await repository.touch_inbound(session, phone, utcnow())


async def opt_out(session: AsyncSession, phone: str) -> bool:
    """STOP: no more invoices or reminders to this phone, from any merchant (receipts still
    go). False when no merchant has it in their address book: nothing to mark."""
    return await repository.set_opted_out(session, phone, utcnow()) > 0


async def opt_in(session: AsyncSession, phone: str) -> None:
    await repository.set_opted_out(session, phone, None)


async def is_opted_out(session: AsyncSession, phone: str) -> bool:
    return await repository.is_opted_out(session, phone)
