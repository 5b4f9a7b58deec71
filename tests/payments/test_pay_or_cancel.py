"""`cancel` and a Pay tap at the same moment (DESIGN §4: cancel is refused while an attempt is
open): each checks in its own transaction, so without a lock on the invoice row both could go
through and leave a cancelled invoice with a push on its way. On PostgreSQL, where they really
run at once (SQLite runs one write transaction at a time)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, Merchant, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.errors import InvoiceNotCancellable
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.payments import messages, service
from invoiceiq.payments.states import PaymentStatus
from support import factories

pytestmark = pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)

ROUNDS = 25


async def tap(sessions: SessionFactory, settings: Settings, invoice: Invoice) -> list[str]:
    async with unit_of_work(sessions) as session:
        replies = await service.tap_to_pay(
            session, settings, phone=invoice.customer_phone, number=invoice.number
        )
    return [reply.text for reply in replies]


async def cancel(sessions: SessionFactory, merchant: Merchant, invoice: Invoice) -> str | None:
    """None when cancelled, else the merchant's refusal."""
    try:
        async with unit_of_work(sessions) as session:
            await invoice_service.cancel(session, merchant, invoice.number)
    except InvoiceNotCancellable as refused:
        return refused.message
    return None


async def test_cancel_and_a_pay_tap_at_once_never_both_go_through(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        merchant = await factories.merchant(session)
        invoices = [
            await factories.invoice(session, merchant=merchant, customer_phone=f"2547120000{i:02d}")
            for i in range(ROUNDS)
        ]

    for invoice in invoices:
        replies, refusal = await asyncio.gather(
            tap(sessions, settings, invoice), cancel(sessions, merchant, invoice)
        )
        async with sessions() as session:
            status = await session.scalar(sa.select(Invoice.status).where(Invoice.id == invoice.id))
            attempts = list(
                await session.scalars(
                    sa.select(Payment.status).where(Payment.invoice_id == invoice.id)
                )
            )
        if refusal is None:  # cancelled: the tap found it cancelled and started nothing
            assert status is InvoiceStatus.CANCELLED and attempts == [], (invoice.number, attempts)
            assert replies == [messages.CANCELLED.format(number=invoice.number)]
        else:  # the tap started first: the cancel saw its attempt and said so
            assert refusal == (
                f"The customer is paying invoice {invoice.number} right now. "
                "Try again in a few minutes."
            )
            assert status is InvoiceStatus.SENT and attempts == [PaymentStatus.INITIATED]
            assert replies == []
