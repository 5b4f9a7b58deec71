"""Every table, imported in one place so metadata and migrations see them all."""

from invoiceiq.conversations.models import Conversation
from invoiceiq.customers.models import Customer
from invoiceiq.db.base import Base
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.invoices.models import Invoice
from invoiceiq.merchants.models import Merchant
from invoiceiq.mpesa.models import ProviderToken
from invoiceiq.notifications.models import MessageLog
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.payments.models import Payment

__all__ = [
    "Base",
    "Conversation",
    "Customer",
    "InboxEvent",
    "Invoice",
    "Merchant",
    "MessageLog",
    "OutboxMessage",
    "Payment",
    "ProviderToken",
]
