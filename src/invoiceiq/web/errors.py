"""Errors of the public page; the handler shows them as an HTML page or JSON (for the poller).

`back_url` adds a "back to the invoice" link on the HTML page; `headers` go on the response.
"""

from __future__ import annotations

from invoiceiq.errors import AppError, Conflict, Forbidden, NotFound


class PageError(AppError):
    back_url: str | None = None
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        back_url: str | None = None,
        headers: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, fields=fields)
        self.back_url = back_url
        self.headers = headers


class LinkNotFound(NotFound):
    code = "invoice_link_not_found"
    message = (
        "This invoice link doesn't work. Check that you opened the whole link, "
        "or ask the business to send it again."
    )


class FormExpired(PageError, Forbidden):
    code = "form_expired"
    message = "This page has expired. Reload the invoice page, then try again."


class PhoneInvalid(PageError):
    code = "validation_error"
    status_code = 422


class TooManyRequests(PageError):
    code = "rate_limited"
    status_code = 429


class NotPayable(PageError, Conflict):
    code = "invoice_not_payable"
