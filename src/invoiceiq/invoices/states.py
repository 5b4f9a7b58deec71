"""Invoice statuses and their transition table (DESIGN §4)."""

from enum import StrEnum

from invoiceiq.kit.state_machine import TransitionTable


class InvoiceStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    PAID = "PAID"
    CANCELLED = "CANCELLED"


# Money can arrive before delivery is confirmed, hence PENDING -> PAID.
INVOICE_TRANSITIONS = TransitionTable[InvoiceStatus](
    "invoice",
    {
        InvoiceStatus.PENDING: {InvoiceStatus.SENT, InvoiceStatus.PAID, InvoiceStatus.CANCELLED},
        InvoiceStatus.SENT: {InvoiceStatus.PAID, InvoiceStatus.CANCELLED},
        InvoiceStatus.PAID: set(),
        InvoiceStatus.CANCELLED: set(),
    },
)
