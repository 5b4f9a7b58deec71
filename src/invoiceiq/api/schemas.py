"""REST API bodies (DESIGN §3): amounts in whole KES, phone numbers typed as in chat.

Responses never carry a full phone number: the customer's is masked as in chat messages.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.phone import PhoneError, normalize_msisdn
from invoiceiq.kit.text import one_line, unshowable, visible_length

DESCRIPTION_MIN, DESCRIPTION_MAX = 3, 120
CUSTOMER_NAME_MAX = 80

CREATE_EXAMPLE: dict[str, Any] = {
    "customer_phone": "0712345678",
    "customer_name": "Jane Wanjiru",
    "amount": 1500,
    "description": "Logo design",
}
READ_EXAMPLE: dict[str, Any] = {
    "number": "INV7K3QX9A",
    "status": "SENT",
    "amount": 1500,
    "vat_amount": "206.89",
    "vat_percent": 16,
    "currency": "KES",
    "customer_phone": "2547•••••678",
    "customer_name": "Jane Wanjiru",
    "description": "Logo design",
    "link": "https://invoiceiq.example/i/q3Jm7cWzK1dVbX0pT9sYhA4nLr8eFu2G",
    "pdf_link": "https://invoiceiq.example/i/q3Jm7cWzK1dVbX0pT9sYhA4nLr8eFu2G.pdf",
    "receipt_number": None,
    "created_at": "2026-11-26T09:30:00Z",
    "sent_at": "2026-11-26T09:30:02Z",
    "paid_at": None,
    "cancelled_at": None,
}


def _tidy_text(value: Any) -> Any:
    """One line, spaces collapsed, before the length limits apply; control characters and
    text-direction overrides refused (kit.text, as in chat)."""
    if not isinstance(value, str):
        return value  # strict validation names the wrong type
    text = one_line(value)
    problem = unshowable(text)
    if problem is not None:
        raise PydanticCustomError("text", problem)
    return text


class InvoiceCreate(BaseModel):
    """Create an invoice and send it to the customer on WhatsApp."""

    # strict: "1500" is not an amount, and an unknown field is a typo worth reporting.
    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"examples": [CREATE_EXAMPLE]}
    )

    customer_phone: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            description="The customer's Kenyan mobile, as typed in chat: 0712345678, "
            "+254712345678, 254712345678 (spaces and dashes allowed).",
            examples=["0712345678"],
        ),
    ]
    customer_name: Annotated[
        str | None,
        Field(max_length=CUSTOMER_NAME_MAX, description="Optional.", examples=["Jane Wanjiru"]),
    ] = None
    amount: Annotated[
        int,
        Field(
            ge=1,
            description="Whole Kenyan shillings, VAT included; at most MPESA_MAX_AMOUNT "
            "(150000 by default), the largest M-PESA payment.",
            examples=[1500],
        ),
    ]
    description: Annotated[
        str,
        Field(
            min_length=DESCRIPTION_MIN,
            max_length=DESCRIPTION_MAX,
            description="What the invoice is for.",
            examples=["Logo design"],
        ),
    ]

    @field_validator("customer_phone")
    @classmethod
    def _kenyan_mobile(cls, value: str) -> str:
        try:
            return normalize_msisdn(value)
        except PhoneError as error:
            raise PydanticCustomError("phone", error.message) from None

    @field_validator("customer_name", "description", mode="before")
    @classmethod
    def _tidy(cls, value: Any) -> Any:
        return _tidy_text(value)

    @field_validator("customer_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return value if value and visible_length(value) else None

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if visible_length(value) < DESCRIPTION_MIN:
            raise PydanticCustomError(
                "description", f"Use at least {DESCRIPTION_MIN} characters, like Logo design."
            )
        return value


class InvoiceRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [READ_EXAMPLE]})

    number: str = Field(description="The invoice number, also the M-PESA account reference.")
    status: InvoiceStatus
    amount: int = Field(description="Whole Kenyan shillings, VAT included.")
    vat_amount: str = Field(
        description='The VAT included in the amount, KES with two decimals ("0.00" when the '
        "merchant does not charge VAT)."
    )
    vat_percent: int | None = Field(
        description="The VAT rate the amount includes, as when the invoice was issued; null "
        "when no VAT is charged."
    )
    currency: Literal["KES"] = "KES"
    customer_phone: str = Field(description="Masked, as in chat: 2547•••••678.")
    customer_name: str | None
    description: str
    link: str = Field(description="The public page, where the customer can view and pay.")
    pdf_link: str = Field(description="The PDF: the invoice, or the receipt once paid.")
    receipt_number: str | None = Field(description="The M-PESA receipt once paid, if known.")
    created_at: datetime
    sent_at: datetime | None
    paid_at: datetime | None
    cancelled_at: datetime | None


class InvoicePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]}
    )

    items: list[InvoiceRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invoice_not_found"])
    message: str = Field(examples=["No invoice INV7K3QX9A."])
    fields: dict[str, str] | None = Field(
        default=None, description="For validation errors: what is wrong with each field."
    )
    error_id: str = Field(description="Quote it when asking for help.", examples=["e3f9a1c2b7d4"])


class ErrorResponse(BaseModel):
    """Every error, everywhere (DESIGN §3)."""

    error: ErrorDetail


class CursorError(ValueError):
    pass


def encode_cursor(created_at: datetime, invoice_id: uuid.UUID) -> str:
    """Opaque to clients: the (created_at, id) of the last invoice of a page."""
    raw = f"{created_at.astimezone(UTC).isoformat()}|{invoice_id.hex}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, hex_id = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        invoice_id = uuid.UUID(hex=hex_id)
        if created_at.tzinfo is None:
            raise ValueError("a naive time")
        # In UTC here: a time at the edge of the calendar in another zone cannot be moved
        # there later (OverflowError).
        created_at = created_at.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise CursorError("Not a cursor from this API: pass next_cursor as it came.") from None
    return created_at, invoice_id
