"""Delivery outcomes: accepted, failed, and statuses reported later by WhatsApp.

Statuses only move forward, so side effects tied to a change (telling the merchant that an
invoice was not delivered, re-sending as a template after 131047) happen once.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.messages import invoice_link
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.merchants import repository as merchant_repository
from invoiceiq.notifications import repository, service
from invoiceiq.notifications.models import DeliveryStatus, MessageLog
from invoiceiq.notifications.schemas import Outbound, TemplateCall
from invoiceiq.outbox import service as outbox
from invoiceiq.whatsapp.errors import TRANSIENT_CODES

# 131047: more than 24 hours since the customer last wrote: only a template gets through.
# https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
OUTSIDE_WINDOW = "131047"
# An invoice or reminder not sent at all: its invoice was cancelled or paid while it waited.
WITHDRAWN = "withdrawn"
INVOICE_KINDS = {"invoice", "reminder"}
# Why a message did not reach the customer, in the merchant's words, by provider error code.
REASONS = {
    "131026": "the number may not be on WhatsApp, or cannot receive messages",
    "131047": "the customer has not written to us in the last 24 hours",
    "131049": "WhatsApp held it back to protect the customer's experience",
    "131050": "the customer has stopped marketing messages",
    "131051": "the message type is not supported",
    WITHDRAWN: "not sent, since the invoice was cancelled or paid before it went out",
}
# A send still failing after every retry (WhatsApp down, or a fault of ours): not the customer.
UNAVAILABLE = "WhatsApp could not be reached, even after several tries"
REFUSED = "WhatsApp did not accept the message"
SEND_LINK = "send them this link another way (SMS, email): {link}"
# How far the invoice message got, for `status`.
PROGRESS = {
    DeliveryStatus.QUEUED: "on its way",
    DeliveryStatus.SENT: "sent, not yet on the customer's phone",
    DeliveryStatus.DELIVERED: "delivered to the customer's phone",
    DeliveryStatus.READ: "read by the customer",
}
_GAVE_UP = {"transient", "ambiguous", "dead"}
WHAT_TO_DO = {
    "131026": "Check the number with your customer. If it was wrong, send a new invoice to the "
    "right number; if it is right, " + SEND_LINK,
    "unavailable": "Type remind {number} in a while to send it again, or " + SEND_LINK,
}


def failure_reason(code: str | None) -> str:
    """The merchant's words for why a message failed, from the code stored with it."""
    if code in REASONS:
        return REASONS[code]
    if code in _GAVE_UP or (code is not None and code.isdecimal() and int(code) in TRANSIENT_CODES):
        return UNAVAILABLE
    return REFUSED


def progress(entry: MessageLog | None) -> str | None:
    """How far a message got, in words; None when there is none."""
    if entry is None:
        return None
    if entry.status is DeliveryStatus.FAILED:
        return f"not delivered: {failure_reason(entry.error_code)}"
    return PROGRESS[entry.status]


async def on_accepted(session: AsyncSession, accepted: repository.Accepted | None) -> None:
    """The provider accepted the message (`repository.record_sent`): an invoice becomes SENT."""
    if accepted is None or accepted.kind != "invoice" or accepted.invoice_id is None:
        return
    invoice = await invoice_repository.get(session, accepted.invoice_id)
    if invoice is not None:
        await invoice_service.mark_sent(session, invoice)


async def record_failure(
    session: AsyncSession,
    settings: Settings,
    log_id: uuid.UUID,
    *,
    code: str,
    exhausted: bool = False,
) -> None:
    """Mark the message failed; for an invoice or reminder, tell its merchant (once: only the
    change to `failed` does). `exhausted`: every retry failed, so the customer is not the cause."""
    entry = await repository.get(session, log_id)
    if entry is None:
        return
    moved = await repository.advance_status(
        session, log_id, DeliveryStatus.FAILED, at=utcnow(), error_code=code
    )
    if moved and entry.kind in INVOICE_KINDS:
        await _tell_merchant(session, settings, entry, "unavailable" if exhausted else code)


FORWARD_STATUSES = {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.READ}


async def advance_many(
    session: AsyncSession, moves: list[tuple[str, str, datetime]]
) -> set[tuple[str, str]]:
    """Apply, in one go, the (provider id, status, at) that only move a message forward (sent,
    delivered, read: no side effect but the status); the (provider id, status) applied. The
    others (a message not recorded yet, or not a forward status) are for `apply_status`."""
    forward = [
        repository.StatusMove(provider_id, DeliveryStatus(status), at)
        for provider_id, status, at in moves
        if status in FORWARD_STATUSES
    ]
    known = await repository.advance_many(session, forward, now=utcnow())
    return {(m.provider_id, m.status.value) for m in forward if m.provider_id in known}


async def apply_status(
    session: AsyncSession,
    settings: Settings,
    *,
    provider_id: str,
    status: str,
    at: datetime,
    error_code: str | None,
) -> bool:
    """Apply a delivery status; False when the message is not known yet (the send's answer is
    still on its way), so the caller can try again shortly."""
    entry = await repository.get_by_provider_id(session, provider_id)
    if entry is None:
        return False
    try:
        target = DeliveryStatus(status)
    except ValueError:
        return True  # a status we do not track (e.g. "deleted", "warning")
    if target is not DeliveryStatus.FAILED:
        await repository.advance_status(session, entry.id, target, at=at)
        return True
    code = error_code or "unknown"
    if code == OUTSIDE_WINDOW and entry.template_name is None and _has_template(entry):
        # Only when the failure is believed: after "delivered" or "read" it is not, and the
        # customer has the message already.
        if await repository.advance_status(session, entry.id, target, at=at, error_code=code):
            await _resend_as_template(session, entry)
        return True
    await record_failure(session, settings, entry.id, code=code)
    return True


def _has_template(entry: MessageLog) -> bool:
    return bool(entry.request and entry.request.get("template"))


async def _resend_as_template(session: AsyncSession, entry: MessageLog) -> None:
    """Once per failed message: the dedupe key makes a repeated status a no-op."""
    new_id = uuid.uuid4()
    added = await outbox.enqueue(
        session,
        service.SEND_TOPIC,
        {"message_log_id": str(new_id), "as_template": True},
        f"resend-as-template:{entry.id}",
        ordering_key=service.ordering_key(entry.phone),
    )
    if added:
        await repository.add(
            session,
            id=new_id,
            direction=entry.direction,
            kind=entry.kind,
            phone=entry.phone,
            status=DeliveryStatus.QUEUED,
            invoice_id=entry.invoice_id,
            request=entry.request,
        )


async def _tell_merchant(
    session: AsyncSession, settings: Settings, entry: MessageLog, cause: str
) -> None:
    if entry.invoice_id is None:
        return
    invoice = await invoice_repository.get(session, entry.invoice_id)
    merchant = await merchant_repository.get(session, invoice.merchant_id) if invoice else None
    if invoice is None or merchant is None:
        return
    reason = UNAVAILABLE if cause == "unavailable" else failure_reason(cause)
    link = invoice_link(settings.base_url, invoice)
    what = WHAT_TO_DO.get(cause, "Please " + SEND_LINK)
    what = what.format(link=link, number=invoice.number)
    what = what[0].upper() + what[1:]
    who = mask_msisdn(invoice.customer_phone)
    label = "reminder for invoice" if entry.kind == "reminder" else "invoice"
    text = f"We could not deliver {label} {invoice.number} to {who}: {reason}.\n\n{what}"
    message = Outbound(
        kind="alert",
        text=text,
        template=TemplateCall("merchant_delivery_failed", (invoice.number, who, reason, what)),
    )
    await service.send(session, to=merchant.phone, message=message, invoice_id=invoice.id)
