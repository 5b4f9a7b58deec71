"""What the schema itself guarantees: uniqueness, one open attempt per invoice, UTC times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, Merchant, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.payments.states import PaymentStatus
from support import factories


async def test_two_initiated_attempts_for_one_invoice_are_refused(session: AsyncSession) -> None:
    invoice = await factories.invoice(session)
    await factories.payment(session, invoice=invoice)
    with pytest.raises(IntegrityError):
        await factories.payment(session, invoice=invoice)


async def test_closed_attempts_do_not_block_a_new_one(session: AsyncSession) -> None:
    invoice = await factories.invoice(session)
    await factories.payment(session, invoice=invoice, status=PaymentStatus.FAILED)
    await factories.payment(session, invoice=invoice, status=PaymentStatus.FAILED)
    await factories.payment(session, invoice=invoice, status=PaymentStatus.INITIATED)
    other = await factories.invoice(session, merchant=None)
    await factories.payment(session, invoice=other)  # the index is per invoice


async def test_simultaneous_attempts_one_wins(sessions: SessionFactory) -> None:
    async with unit_of_work(sessions) as session:
        invoice = await factories.invoice(session)
    gate = asyncio.Event()

    async def start() -> bool:
        await gate.wait()
        try:
            async with unit_of_work(sessions) as session:
                session.add(
                    Payment(
                        invoice_id=invoice.id,
                        phone="254712345678",
                        amount_cents=invoice.amount_cents,
                    )
                )
        except IntegrityError:
            return False
        return True

    racers = [asyncio.create_task(start()) for _ in range(5)]
    gate.set()
    assert sorted(await asyncio.gather(*racers)) == [False] * 4 + [True]


@pytest.mark.parametrize(
    ("model", "column"),
    [
        (Invoice, "number"),
        (Invoice, "public_token"),
        (Payment, "checkout_request_id"),
        (Payment, "merchant_request_id"),
        (Payment, "receipt_number"),
        (Merchant, "phone"),
    ],
)
async def test_unique_columns(session: AsyncSession, model: type, column: str) -> None:
    invoice_a = await factories.invoice(session)
    invoice_b = await factories.invoice(session)
    if model is Invoice:
        first, second = invoice_a, invoice_b
    elif model is Payment:
        first = await factories.payment(session, invoice=invoice_a, status=PaymentStatus.FAILED)
        second = await factories.payment(session, invoice=invoice_b, status=PaymentStatus.FAILED)
        setattr(first, column, "SAME-VALUE-1")
        await session.flush()
    else:
        first = await factories.merchant(session)
        second = await factories.merchant(session)
    setattr(second, column, getattr(first, column))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_times_come_back_aware_utc(session: AsyncSession) -> None:
    nairobi_noon = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=3)))
    invoice = await factories.invoice(session, paid_at=nairobi_noon)
    await session.commit()
    session.expunge_all()
    loaded = await session.get(Invoice, invoice.id)
    assert loaded is not None and loaded.paid_at is not None
    assert loaded.paid_at.tzinfo is not None
    assert loaded.paid_at.utcoffset() == timedelta(0)
    assert loaded.paid_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert loaded.created_at.tzinfo is not None


async def test_naive_times_are_refused(session: AsyncSession) -> None:
    with pytest.raises(StatementError):
        await factories.invoice(session, paid_at=datetime(2026, 3, 1, 12, 0))


async def test_time_comparisons_agree_on_both_databases(session: AsyncSession) -> None:
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    for minutes in (0, 30, 90):
        await factories.invoice(session, sent_at=base + timedelta(minutes=minutes))
    cutoff = datetime(2026, 3, 1, 15, 45, tzinfo=timezone(timedelta(hours=3)))  # 12:45 UTC
    count = await session.scalar(
        sa.select(sa.func.count()).select_from(Invoice).where(Invoice.sent_at > cutoff)
    )
    assert count == 1


async def test_amounts_must_be_positive(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError):
        await factories.invoice(session, amount_cents=0)


async def test_concurrent_writers_wait_instead_of_failing(sessions: SessionFactory) -> None:
    """SQLite serialises writers (BEGIN IMMEDIATE, busy timeout): none gets "database is locked"."""

    async def write(n: int) -> None:
        async with unit_of_work(sessions) as session:
            # Read first, then write: the pattern that fails with "database is locked" when a
            # deferred transaction must upgrade its read lock while another writer holds one.
            await session.scalar(sa.select(sa.func.count()).select_from(Merchant))
            await asyncio.sleep(0.01)
            await factories.merchant(session, phone=f"25471100{n:04d}")

    await asyncio.gather(*(write(n) for n in range(20)))
    async with sessions() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(Merchant))
    assert count == 20
