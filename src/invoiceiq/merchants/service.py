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

    Under approval, a new name is approved too: customers see it on every invoice, so an
    approved "Mama Mboga" must not become "KPLC Prepaid" unseen. An active merchant who renames
    waits for approval again (a suspended one stays suspended)."""
    status = (
        MerchantStatus.PENDING_APPROVAL if signup is SignupMode.APPROVAL else MerchantStatus.ACTIVE
    )
    await repository.insert_if_absent_by_phone(
        session, {"phone": phone, "business_name": name, "status": status}
    )
    merchant = await repository.get_by_phone(session, phone, lock=True)
    assert merchant is not None  # inserted above or already there
    if merchant.business_name != name:
        values: dict[str, object] = {"business_name": name}
        if signup is SignupMode.APPROVAL and merchant.status is MerchantStatus.ACTIVE:
            values["status"] = MerchantStatus.PENDING_APPROVAL
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
