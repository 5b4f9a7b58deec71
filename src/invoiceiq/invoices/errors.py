"""Invoice errors."""

from invoiceiq.errors import Conflict, NotFound


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"
    message = "No invoice with that number."


class InvoiceNotCancellable(Conflict):
    code = "invoice_not_cancellable"


class ReminderRefused(Conflict):
    code = "reminder_refused"


class InvoiceRefused(Conflict):
    code = "invoice_refused"
