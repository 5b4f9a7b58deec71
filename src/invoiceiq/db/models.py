"""Every table, imported in one place so metadata and migrations see them all."""

from invoiceiq.api.models import ApiKey, IdempotencyRecord
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
from invoiceiq.web.models import RateLimitCounter

__all__ = [
    "ApiKey",
    "Base",
    "Conversation",
    "Customer",
    "IdempotencyRecord",
    "InboxEvent",
    "Invoice",
    "Merchant",
    "MessageLog",
    "OutboxMessage",
    "Payment",
    "ProviderToken",
    "RateLimitCounter",
]
