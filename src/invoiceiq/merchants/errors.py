"""Merchant errors."""

from invoiceiq.errors import AppError, NotFound


class MerchantNotFound(NotFound):
    code = "merchant_not_found"
    message = "No merchant has that number."


class MerchantCannotInvoice(AppError):
    code = "merchant_cannot_invoice"
    status_code = 403
