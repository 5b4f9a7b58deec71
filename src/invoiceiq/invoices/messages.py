"""What customers and merchants read about invoices (free-form text and template fallbacks)."""

from __future__ import annotations

from datetime import datetime

from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import nairobi
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.notifications.schemas import Outbound, TemplateCall

PAY_BUTTON_TITLE = "Pay with M-PESA"


def pay_button_id(number: str) -> str:
    return f"pay:{number}"


def pay_button(number: str) -> tuple[str, str]:
    """The **Pay with M-PESA** reply button for invoice `number`: (id, title)."""
    return pay_button_id(number), PAY_BUTTON_TITLE


def invoice_link(base_url: str, invoice: Invoice) -> str:
    return f"{base_url}/i/{invoice.public_token}"


def vat_rate(invoice: Invoice, current: int) -> int:
    """The VAT rate the invoice was issued at; `current` (VAT_PERCENT) for one issued before
    the rate was kept with it."""
    return invoice.vat_percent if invoice.vat_percent is not None else current


def _vat_line(invoice: Invoice, vat_percent: int) -> str:
    if not invoice.vat_cents:
        return ""
    return vat_included_line(invoice.vat_cents, vat_rate(invoice, vat_percent))


def vat_included_line(vat_cents: int, rate: int) -> str:
    """The line under an amount that says how much VAT it includes (chat messages)."""
    return f"\nIncludes VAT ({rate}%): {format_kes(vat_cents)}"


def invoice_for_customer(
    invoice: Invoice, *, business_name: str, base_url: str, vat_percent: int, kind: str = "invoice"
) -> Outbound:
    link = invoice_link(base_url, invoice)
    openings = {
        "invoice": f"*{business_name}* sent you an invoice.",
        "reminder": f"Reminder: *{business_name}* is waiting for payment of this invoice.",
    }
    opening = openings.get(kind, f"Invoice from *{business_name}*.")
    text = (
        f"{opening}\n\n"
        f"Invoice: {invoice.number}\n"
        f"Amount: {format_kes(invoice.amount_cents)}"
        f"{_vat_line(invoice, vat_percent)}\n"
        f"For: {invoice.description}\n\n"
        f"View or download: {link}\n\n"
        f"Tap *{PAY_BUTTON_TITLE}* to pay from this WhatsApp number."
    )
    return Outbound(
        kind=kind,
        text=text,
        buttons=(pay_button(invoice.number),),
        template=_invoice_template(invoice, business_name=business_name, link=link, kind=kind),
    )


def _invoice_template(
    invoice: Invoice, *, business_name: str, link: str, kind: str
) -> TemplateCall:
    """The approved template for outside the window; same Pay payload as the reply button."""
    amount = format_kes(invoice.amount_cents)
    payloads = (pay_button_id(invoice.number),)
    if kind == "reminder":
        params: tuple[str, ...] = (business_name, invoice.number, amount, link)
        return TemplateCall("invoice_reminder", params, payloads)
    params = (business_name, invoice.number, amount, invoice.description, link)
    return TemplateCall("invoice_new", params, payloads)


def confirmation_for_merchant(invoice: Invoice, *, base_url: str) -> Outbound:
    who = mask_msisdn(invoice.customer_phone)
    if invoice.customer_name:
        who = f"{invoice.customer_name} ({who})"
    text = (
        f"Invoice {invoice.number} for {format_kes(invoice.amount_cents)} is on its way to {who}.\n"
        f"Link: {invoice_link(base_url, invoice)}\n\n"
        f"Next:\n"
        f"• status {invoice.number} to see where it is\n"
        f"• remind {invoice.number} to send it again\n"
        f"• cancel {invoice.number} to cancel it"
    )
    return Outbound(kind="confirmation", text=text)


STATUS_WORDS = {
    InvoiceStatus.PENDING: "not sent yet",
    InvoiceStatus.SENT: "sent, waiting for payment",
    InvoiceStatus.PAID: "paid",
    InvoiceStatus.CANCELLED: "cancelled",
}


def _stamp(moment: datetime) -> str:
    return nairobi(moment).strftime("%d %b %Y %H:%M")


def status_detail(
    invoice: Invoice,
    *,
    base_url: str,
    vat_percent: int,
    delivery: str | None,
    receipt: str | None,
    payment_note: str | None = None,
) -> str:
    """Everything `status <number>` tells the merchant about one invoice; `payment_note`, a
    payment under way or being checked, replaces the remind/cancel hint (neither helps then)."""
    who = mask_msisdn(invoice.customer_phone)
    if invoice.customer_name:
        who = f"{invoice.customer_name} ({who})"
    lines = [
        f"Invoice {invoice.number}: {STATUS_WORDS[invoice.status]}",
        f"Customer: {who}",
        f"Amount: {format_kes(invoice.amount_cents)}{_vat_line(invoice, vat_percent)}",
        f"For: {invoice.description}",
        f"Created: {_stamp(invoice.created_at)}",
    ]
    if invoice.status is InvoiceStatus.PAID:
        paid = _stamp(invoice.paid_at) if invoice.paid_at else "yes"
        proof = f"M-PESA receipt {receipt}" if receipt else "confirmed by M-PESA"
        lines.append(f"Paid: {paid}, {proof}")
    elif invoice.status is InvoiceStatus.CANCELLED and invoice.cancelled_at:
        lines.append(f"Cancelled: {_stamp(invoice.cancelled_at)}")
    elif delivery:
        lines.append(f"Message: {delivery}")
    lines.append(f"Link: {invoice_link(base_url, invoice)}")
    if payment_note:
        lines.append(f"\nPayment: {payment_note}")
    elif invoice.status in (InvoiceStatus.PENDING, InvoiceStatus.SENT):
        lines.append(
            f"\nremind {invoice.number} to send it again, cancel {invoice.number} to cancel it"
        )
    return "\n".join(lines)


def status_line(invoice: Invoice) -> str:
    created = nairobi(invoice.created_at).strftime("%d %b %Y %H:%M")
    who = invoice.customer_name or mask_msisdn(invoice.customer_phone)
    return (
        f"{invoice.number} · {format_kes(invoice.amount_cents)} · {who} · "
        f"{invoice.status.value.lower()} · {created}"
    )
