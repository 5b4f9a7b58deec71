"""API use cases: merchant API keys (stored hashed) and idempotent invoice creation.

Idempotency (DESIGN §3): the first request with a key records the key, a digest of its body
and, once done, its response, in the same transaction as the invoice. A repeat with the same
body gets that response again; with another body, a 409. A request that fails rolls back its
record too, so a retry after an error is a fresh attempt. Records live 24 hours.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.api import repository
from invoiceiq.api.errors import IdempotencyConflict, RequestInvalid
from invoiceiq.api.models import IdempotencyRecord
from invoiceiq.api.schemas import (
    CursorError,
    InvoiceCreate,
    InvoicePage,
    InvoiceRead,
    decode_cursor,
    encode_cursor,
)
from invoiceiq.config import Settings
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.errors import InvoiceNotFound
from invoiceiq.invoices.messages import invoice_link, vat_rate
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.numbering import number_as_meant
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import CENTS_PER_SHILLING, format_kes, to_cents
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.errors import MerchantNotFound
from invoiceiq.merchants.models import Merchant
from invoiceiq.payments import service as payment_service

KEY_PREFIX = "iq_"
# Longer than any key we issue (3 + 43 characters); anything longer is not one of ours.
MAX_KEY_LENGTH = 100
IDEMPOTENCY_TTL = timedelta(hours=24)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession, *, phone: str, revoke_others: bool = False
) -> tuple[Merchant, str]:
    """A new key for the merchant with this WhatsApp number; the key itself is never stored."""
    merchant = await merchant_service.find(session, phone)
    if merchant is None:
        raise MerchantNotFound()
    if revoke_others:
        await repository.revoke_keys(session, merchant.id, at=utcnow())
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await repository.add_key(
        session, merchant_id=merchant.id, prefix=key[:10], key_hash=_digest(key)
    )
    return merchant, key


async def authenticate(session: AsyncSession, key: str) -> Merchant | None:
    """The merchant whose active key this is, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
        return None
    found = await repository.active_key(session, _digest(key))
    if found is None:
        return None
    return await merchant_service.get(session, found.merchant_id)


@dataclass(frozen=True)
class Replay:
    """A create's response; `replayed` when it is the first request's, sent again."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def request_digest(body: dict[str, Any]) -> str:
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


async def begin_idempotent(
    session: AsyncSession, *, merchant: Merchant, key: str, request_hash: str
) -> IdempotencyRecord | Replay:
    """Own the key (a new record to finish), or get the first request's response."""
    now = utcnow()
    await repository.delete_expired_records(session, merchant.id, now=now)
    await repository.claim_record(
        session,
        {
            "merchant_id": merchant.id,
            "key": key,
            "request_hash": request_hash,
            "expires_at": now + IDEMPOTENCY_TTL,
        },
    )
    record = await repository.get_record(session, merchant.id, key)
    assert record is not None  # claimed above, or committed by the request that claimed it
    if record.request_hash != request_hash:
        raise IdempotencyConflict()
    if record.response_body is None or record.response_status is None:
        return record  # ours, inserted just now
    return Replay(record.response_status, record.response_body, replayed=True)


async def finish_idempotent(
    session: AsyncSession, record: IdempotencyRecord, *, status: int, body: dict[str, Any]
) -> None:
    await repository.set_response(session, record.id, status=status, body=body)


# Invoices through the API ----------------------------------------------------------------------


async def invoice_read(session: AsyncSession, settings: Settings, invoice: Invoice) -> InvoiceRead:
    receipt = None
    if invoice.status is InvoiceStatus.PAID:
        paid = await payment_service.first_success(session, invoice.id)
        receipt = paid.receipt_number if paid else None
    link = invoice_link(settings.base_url, invoice)
    return InvoiceRead(
        number=invoice.number,
        status=invoice.status,
        amount=invoice.amount_cents // CENTS_PER_SHILLING,
        vat_amount=f"{invoice.vat_cents // 100}.{invoice.vat_cents % 100:02d}",
        vat_percent=vat_rate(invoice, settings.vat_percent) if invoice.vat_cents else None,
        customer_phone=mask_msisdn(invoice.customer_phone),
        customer_name=invoice.customer_name,
        description=invoice.description,
        link=link,
        pdf_link=f"{link}.pdf",
        receipt_number=receipt,
        created_at=invoice.created_at,
        sent_at=invoice.sent_at,
        paid_at=invoice.paid_at,
        cancelled_at=invoice.cancelled_at,
    )


async def create_invoice(
    session: AsyncSession,
    settings: Settings,
    *,
    merchant: Merchant,
    body: InvoiceCreate,
    idempotency_key: str | None,
) -> Replay:
    """Create and send (invoices.service.issue_invoice), once per Idempotency-Key."""
    if body.amount > settings.mpesa_max_amount:
        most = format_kes(to_cents(settings.mpesa_max_amount))
        raise RequestInvalid(fields={"amount": f"M-PESA takes at most {most} in one payment."})
    record = None
    if idempotency_key is not None:
        started = await begin_idempotent(
            session,
            merchant=merchant,
            key=idempotency_key,
            request_hash=request_digest(body.model_dump(mode="json")),
        )
        if isinstance(started, Replay):
            return started
        record = started
    invoice = await invoice_service.issue_invoice(
        session,
        settings=settings,
        merchant=merchant,
        customer_phone=body.customer_phone,
        customer_name=body.customer_name,
        amount_cents=to_cents(body.amount),
        description=body.description,
    )
    created = Replay(201, (await invoice_read(session, settings, invoice)).model_dump(mode="json"))
    if record is not None:
        await finish_idempotent(session, record, status=created.status, body=created.body)
    return created


async def list_invoices(
    session: AsyncSession,
    settings: Settings,
    *,
    merchant: Merchant,
    status: InvoiceStatus | None,
    cursor: str | None,
    limit: int,
) -> InvoicePage:
    try:
        after = decode_cursor(cursor) if cursor else None
    except CursorError as error:
        raise RequestInvalid(fields={"cursor": str(error)}) from None
    # One more than asked: whether it exists says if there is a next page.
    invoices = await invoice_service.list_for_merchant(
        session, merchant, status=status, after=after, limit=limit + 1
    )
    page = invoices[:limit]
    next_cursor = None
    if len(invoices) > limit:
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
    items = [await invoice_read(session, settings, invoice) for invoice in page]
    return InvoicePage(items=items, next_cursor=next_cursor)


async def get_invoice(session: AsyncSession, merchant: Merchant, number: str) -> Invoice:
    """Another merchant's invoice is "not found", exactly like one that does not exist."""
    try:
        return await invoice_service.get_for_merchant(session, merchant, number_as_meant(number))
    except InvoiceNotFound:
        raise InvoiceNotFound(f"No invoice {number}.") from None


async def cancel_invoice(session: AsyncSession, merchant: Merchant, number: str) -> Invoice:
    invoice = await get_invoice(session, merchant, number)
    return await invoice_service.cancel(session, merchant, invoice.number)


async def remind_invoice(
    session: AsyncSession, settings: Settings, merchant: Merchant, number: str
) -> Invoice:
    invoice = await get_invoice(session, merchant, number)
    return await invoice_service.remind(
        session, settings=settings, merchant=merchant, number=invoice.number
    )
