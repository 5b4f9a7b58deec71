"""Merchant use cases: naming a business, approval, suspension, VAT."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import SignupMode
from invoiceiq.merchants import repository
from invoiceiq.merchants.errors import MerchantCannotInvoice, MerchantNotFound
from invoiceiq.merchants.models import Merchant
from invoiceiq.merchants.states import MerchantStatus


async def find(session: AsyncSession, phone: str, *, lock: bool = False) -> Merchant | None:
    return await repository.get_by_phone(session, phone, lock=lock)


async def get(session: AsyncSession, merchant_id: uuid.UUID) -> Merchant | None:
    return await repository.get(session, merchant_id)


async def set_business_name(
    session: AsyncSession, *, phone: str, name: str, signup: SignupMode
) -> Merchant:
    """Name the business; the first name creates the merchant (awaiting approval if required).

    Under approval, a new name is approved too: customers see it on every invoice, page and
    receipt, so an approved "Mama Mboga" must not become "KPLC Prepaid" unseen. The new name
    waits (`pending_business_name`) while the approved one stays in use; asking for the
    approved name again withdraws the request."""
    status = (
        MerchantStatus.PENDING_APPROVAL if signup is SignupMode.APPROVAL else MerchantStatus.ACTIVE
    )
    await repository.insert_if_absent_by_phone(
        session, {"phone": phone, "business_name": name, "status": status}
    )
    merchant = await repository.get_by_phone(session, phone, lock=True)
    assert merchant is not None  # inserted above or already there
    approved_before = merchant.status is not MerchantStatus.PENDING_APPROVAL
    if signup is SignupMode.APPROVAL and approved_before and merchant.business_name:
        pending = None if name == merchant.business_name else name
        if merchant.pending_business_name != pending:
            await repository.update(session, merchant.id, pending_business_name=pending)
    elif merchant.business_name != name or merchant.pending_business_name:
        await repository.update(
            session, merchant.id, business_name=name, pending_business_name=None
        )
    return merchant


async def approve(session: AsyncSession, *, phone: str) -> Merchant:
    """Let the merchant invoice, under the new name they asked for if any."""
    merchant = await repository.get_by_phone(session, phone, lock=True)
    if merchant is None:
        raise MerchantNotFound()
    values: dict[str, object] = {"status": MerchantStatus.ACTIVE}
    if merchant.pending_business_name:
        values.update(business_name=merchant.pending_business_name, pending_business_name=None)
    await repository.update(session, merchant.id, **values)
    return merchant


async def set_vat(session: AsyncSession, merchant: Merchant, *, enabled: bool) -> None:
    await repository.update(session, merchant.id, vat_enabled=enabled)


async def set_status(session: AsyncSession, *, phone: str, status: MerchantStatus) -> Merchant:
    merchant = await repository.get_by_phone(session, phone, lock=True)
    if merchant is None:
        raise MerchantNotFound()
    await repository.update(session, merchant.id, status=status)
    return merchant


def ensure_can_invoice(merchant: Merchant) -> None:
    """Only an active, named merchant may send invoices from the platform's number."""
    if merchant.status is MerchantStatus.SUSPENDED:
        raise MerchantCannotInvoice(
            "Your account is suspended, so you can't send invoices. Contact InvoiceIQ support."
        )
    if merchant.status is MerchantStatus.PENDING_APPROVAL:
        raise MerchantCannotInvoice(
            "Your signup is waiting for approval. We'll let you know when you can send invoices."
        )
    if not merchant.business_name:
        raise MerchantCannotInvoice(
            "First tell customers who you are: type name followed by your business name, "
            "like: name Wanjiku Designs"
        )
