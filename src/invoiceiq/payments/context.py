"""What payment messages need to know of a payment's invoice and its business."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.models import Invoice
from invoiceiq.merchants import repository as merchant_repository
from invoiceiq.payments.models import Payment


async def invoice_of(session: AsyncSession, payment: Payment) -> Invoice | None:
    if payment.invoice_id is None:
        return None
    return await invoice_repository.get(session, payment.invoice_id)


async def business_name(session: AsyncSession, invoice: Invoice) -> str:
    merchant = await merchant_repository.get(session, invoice.merchant_id)
    return (merchant.business_name if merchant else None) or "the business"
