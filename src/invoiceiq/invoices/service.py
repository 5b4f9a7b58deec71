"""Invoice use cases: issue, look up, cancel, remind. Services flush; callers commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.customers import service as customer_service
from invoiceiq.invoices import messages, repository
from invoiceiq.invoices.errors import (
    InvoiceNotCancellable,
    InvoiceNotFound,
    InvoiceRefused,
    ReminderRefused,
)
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import INVOICE_TRANSITIONS, InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import vat_cents
from invoiceiq.kit.state_machine import TransitionRefused
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.notifications import service as notifications
from invoiceiq.payments import service as payment_service


def vat_to_charge(merchant: Merchant, settings: Settings, amount_cents: int) -> int:
    """The VAT an invoice of this merchant for `amount_cents` includes (0 with VAT off)."""
    return vat_cents(amount_cents, settings.vat_percent) if merchant.vat_enabled else 0


async def issue_invoice(
    session: AsyncSession,
    *,
    settings: Settings,
    merchant: Merchant,
    customer_phone: str,
    customer_name: str | None,
    amount_cents: int,
    description: str,
) -> Invoice:
    """Create the invoice, remember the customer and queue both messages, in one transaction."""
    merchant_service.ensure_can_invoice(merchant)
    if await customer_service.is_opted_out(session, customer_phone):
        raise InvoiceRefused(
            "This customer asked not to receive invoices (they sent STOP), so nothing was sent."
        )
    customer = await customer_service.remember(
        session, merchant_id=merchant.id, phone=customer_phone, name=customer_name
    )
    invoice = await repository.insert(
        session,
        {
            "merchant_id": merchant.id,
            "customer_id": customer.id,
            "customer_phone": customer_phone,
            "customer_name": customer_name or customer.name,
            "amount_cents": amount_cents,
            "vat_cents": vat_to_charge(merchant, settings, amount_cents),
            "vat_percent": settings.vat_percent if merchant.vat_enabled else None,
            "description": description,
            "status": InvoiceStatus.PENDING,
        },
    )
    await _send_to_customer(session, settings, merchant, invoice, kind="invoice")
    await notifications.send(
        session,
        to=merchant.phone,
        message=messages.confirmation_for_merchant(invoice, base_url=settings.base_url),
        invoice_id=invoice.id,
    )
    return invoice


async def _send_to_customer(
    session: AsyncSession, settings: Settings, merchant: Merchant, invoice: Invoice, *, kind: str
) -> None:
    message = messages.invoice_for_customer(
        invoice,
        business_name=merchant.business_name or "",
        base_url=settings.base_url,
        vat_percent=settings.vat_percent,
        kind=kind,
    )
    await notifications.send(
        session, to=invoice.customer_phone, message=message, invoice_id=invoice.id
    )


async def get_for_merchant(session: AsyncSession, merchant: Merchant, number: str) -> Invoice:
    """Another merchant's invoice is "not found": its existence is not revealed."""
    invoice = await repository.get_by_number(session, number)
    if invoice is None or invoice.merchant_id != merchant.id:
        raise InvoiceNotFound(f"You have no invoice {number}. Type unpaid to see your invoices.")
    return invoice


async def find_by_token(session: AsyncSession, token: str) -> Invoice | None:
    """The invoice its public link opens, or None (the link's token is its only key)."""
    return await repository.get_by_token(session, token)


async def cancel(session: AsyncSession, merchant: Merchant, number: str) -> Invoice:
    """Refused while a payment attempt is open. The row is locked before that check, so a
    Pay tap at the same moment (which holds it too) either starts first and is seen here, or
    waits and then finds the invoice cancelled."""
    found = await get_for_merchant(session, merchant, number)
    invoice = await repository.lock_for_status_change(session, found.id)
    assert invoice is not None  # invoices are never deleted
    if invoice.status is InvoiceStatus.PAID:
        raise InvoiceNotCancellable(f"Invoice {number} is already paid, so it can't be cancelled.")
    if invoice.status is InvoiceStatus.CANCELLED:
        raise InvoiceNotCancellable(f"Invoice {number} is already cancelled.")
    if await payment_service.has_open_attempt(session, invoice.id):
        raise InvoiceNotCancellable(
            f"The customer is paying invoice {number} right now. Try again in a few minutes."
        )
    await INVOICE_TRANSITIONS.apply(
        session,
        Invoice,
        invoice.id,
        InvoiceStatus.CANCELLED,
        source=(InvoiceStatus.PENDING, InvoiceStatus.SENT),
        values={"cancelled_at": utcnow()},
    )
    return invoice


async def remind(
    session: AsyncSession, *, settings: Settings, merchant: Merchant, number: str
) -> Invoice:
    merchant_service.ensure_can_invoice(merchant)  # a suspended merchant's reminders stop too
    invoice = await get_for_merchant(session, merchant, number)
    if invoice.status not in (InvoiceStatus.PENDING, InvoiceStatus.SENT):
        raise ReminderRefused(f"Invoice {number} is {invoice.status.value.lower()}: no reminder.")
    if await customer_service.is_opted_out(session, invoice.customer_phone):
        raise ReminderRefused(
            "This customer asked not to receive invoices or reminders (they sent STOP)."
        )
    hand = await payment_service.payment_in_hand(session, invoice.id)
    if hand is not None and hand.state == "open":
        raise ReminderRefused(
            f"A payment of invoice {number} is in progress: an M-PESA prompt is open. Remind "
            "once it has ended."
        )
    if hand is not None:
        # The customer may have paid: a reminder with a Pay button could have them pay twice.
        raise ReminderRefused(
            f"A payment of invoice {number} is being checked by our team against the M-PESA "
            "statement: the customer may have paid. No reminder until it is settled."
        )
    now = utcnow()
    # The interval spares the customer repeats; a message that never reached them is none.
    if not await notifications.last_delivery_failed(session, invoice.id):
        last = invoice.last_reminded_at or invoice.created_at
        wait = timedelta(seconds=settings.remind_min_interval) - (now - last)
        if wait > timedelta(0):
            minutes = max(1, int(wait.total_seconds() // 60))
            raise ReminderRefused(
                f"Invoice {number} was sent recently. You can remind again in {minutes} min."
            )
    seen = invoice.last_reminded_at
    if not await repository.claim_reminder(session, invoice.id, seen=seen, at=now):
        raise ReminderRefused(f"A reminder for invoice {number} was just sent.")
    await _send_to_customer(session, settings, merchant, invoice, kind="reminder")
    return invoice


async def list_for_merchant(
    session: AsyncSession,
    merchant: Merchant,
    *,
    status: InvoiceStatus | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 20,
) -> list[Invoice]:
    """A page of the merchant's invoices, newest first, after the (created_at, id) `after`."""
    return await repository.page_for_merchant(
        session, merchant.id, status=status, after=after, limit=limit
    )


async def unpaid(session: AsyncSession, merchant: Merchant, *, limit: int = 10) -> list[Invoice]:
    return await repository.unpaid_for_merchant(session, merchant.id, limit=limit)


async def count_unpaid(session: AsyncSession, merchant: Merchant) -> int:
    return await repository.count_unpaid_for_merchant(session, merchant.id)


async def unpaid_for_customer(
    session: AsyncSession, phone: str, *, limit: int = 3
) -> list[Invoice]:
    return await repository.unpaid_for_customer(session, phone, limit=limit)


async def mark_sent(session: AsyncSession, invoice: Invoice) -> bool:
    """PENDING → SENT when the provider accepted the message; False if it moved on already."""
    try:
        await INVOICE_TRANSITIONS.apply(
            session,
            Invoice,
            invoice.id,
            InvoiceStatus.SENT,
            source=InvoiceStatus.PENDING,
            values={"sent_at": utcnow()},
        )
    except TransitionRefused:  # already SENT, PAID or CANCELLED
        return False
    return True
