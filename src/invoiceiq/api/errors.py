"""REST API errors (rendered in the DESIGN §3 shape by invoiceiq.error_handlers)."""

from __future__ import annotations

from typing import ClassVar

from invoiceiq.errors import AppError, Conflict, Unauthorized


class InvalidApiKey(Unauthorized):
    code = "invalid_api_key"
    message = "A valid API key is required: send the header Authorization: Bearer <your key>."
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    message = (
        "This Idempotency-Key was already used with a different request body. "
        "Use a new key for a new invoice."
    )


class RequestInvalid(AppError):
    """A field the schema accepts but a rule that depends on settings or state refuses."""

    code = "validation_error"
    status_code = 422
    message = "Some fields are invalid."
