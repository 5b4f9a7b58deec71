"""Rows for tests, inserted directly (the domain services arrive with their features)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.models import Invoice, Merchant, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.payments.states import PaymentStatus


async def merchant(session: AsyncSession, **values: Any) -> Merchant:
    row = Merchant(
        phone=values.pop("phone", f"2547{secrets.randbelow(10**8):08d}"),
        business_name=values.pop("business_name", "Wanjiku Designs"),
        **values,
    )
    session.add(row)
    await session.flush()
    return row


async def invoice(session: AsyncSession, **values: Any) -> Invoice:
    owner = values.pop("merchant", None) or await merchant(session)
    row = Invoice(
        number=values.pop("number", "INV" + secrets.token_hex(4).upper()[:7]),
        public_token=values.pop("public_token", secrets.token_urlsafe(24)),
        merchant_id=owner.id,
        customer_phone=values.pop("customer_phone", "254712345678"),
        amount_cents=values.pop("amount_cents", 150_000),
        description=values.pop("description", "Logo design"),
        status=values.pop("status", InvoiceStatus.SENT),
        **values,
    )
    session.add(row)
    await session.flush()
    return row


async def payment(session: AsyncSession, **values: Any) -> Payment:
    target = values.pop("invoice", None) or await invoice(session)
    row = Payment(
        invoice_id=target.id,
        phone=values.pop("phone", target.customer_phone),
        amount_cents=values.pop("amount_cents", target.amount_cents),
        status=values.pop("status", PaymentStatus.INITIATED),
        **values,
    )
    session.add(row)
    await session.flush()
    return row
