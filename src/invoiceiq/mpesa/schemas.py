"""Daraja's wire format: OAuth, STK push and query answers, and the STK callback.

Field types differ between documents and between Daraja's own answers, so every model here is
lenient in exactly the documented ways and strict about everything that decides money
(reference/daraja-mpesa.md §0, §3):
- `ResultCode` is a number in the callback, a string in the query, and sometimes not a number
  at all (`"SFC_IC0003"`): it is kept as a string
  (https://developer.safaricom.co.ke/apis/MpesaExpressQuery).
- `CallbackMetadata.Item` is a list of `{Name, Value}` pairs whose order and presence vary;
  `Balance` may have no `Value` or be missing (https://developer.safaricom.co.ke/apis/
  MpesaExpressSimulate, "Callback"). Items are looked up by name.
- `Amount` comes as `1`, `1.0` or `1.00`; it must be a whole number of shillings.
- `expires_in` of the OAuth answer is a number or a string (`"3599"`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from invoiceiq.kit.clock import NAIROBI

_T = TypeVar("_T")

SUCCESS_CODE = "0"
_DARAJA_TIME_FORMAT = "%Y%m%d%H%M%S"
_INTEGRAL_DECIMAL = re.compile(r"-?[0-9]+\.0+")


class _Wire(BaseModel):
    # Unknown fields are ignored: Daraja adds fields without notice. Numbers are accepted where
    # the documents show strings (codes, ids), since both are seen in the wild.
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class TokenResponse(_Wire):
    """`GET /oauth/v1/generate` (https://developer.safaricom.co.ke/apis/Authorization)."""

    access_token: str = Field(min_length=1)
    # Documented as a number; many real answers send the string "3599". The documented
    # lifetime is 3600 s, so a missing value is read as just under an hour.
    expires_in: int = Field(default=3599, gt=0)


class StkPushResponse(_Wire):
    """The synchronous answer to an STK push: accepted for processing, not paid."""

    merchant_request_id: str = Field(alias="MerchantRequestID", min_length=1)
    checkout_request_id: str = Field(alias="CheckoutRequestID", min_length=1)
    response_code: str = Field(alias="ResponseCode")
    response_description: str | None = Field(default=None, alias="ResponseDescription")
    customer_message: str | None = Field(default=None, alias="CustomerMessage")


class StkQueryResponse(_Wire):
    """The STK Query's final-state answer; all codes are strings there."""

    response_code: str | None = Field(default=None, alias="ResponseCode")
    checkout_request_id: str | None = Field(default=None, alias="CheckoutRequestID")
    result_code: str | None = Field(default=None, alias="ResultCode")
    result_desc: str | None = Field(default=None, alias="ResultDesc")


class CallbackItem(_Wire):
    name: str = Field(alias="Name")
    # Any JSON value, or absent (Balance often has no Value).
    value: Any = Field(default=None, alias="Value")


class CallbackMetadata(_Wire):
    items: list[CallbackItem] = Field(default_factory=list, alias="Item")

    @field_validator("items", mode="before")
    @classmethod
    def _one_item_alone(cls, value: Any) -> Any:
        # A lone {Name, Value} has been seen where a list of them belongs.
        return [value] if isinstance(value, dict) else value


class StkCallbackPayload(_Wire):
    # What decides money (the push it is about, its result) is strict; the rest is kept as
    # far as it can be read, since Daraja sends a callback once and a refused one is lost.
    merchant_request_id: str | None = Field(default=None, alias="MerchantRequestID")
    checkout_request_id: str = Field(alias="CheckoutRequestID", min_length=1)
    result_code: str = Field(alias="ResultCode", min_length=1)
    result_desc: str | None = Field(default=None, alias="ResultDesc")
    # Present only on success; absent (not empty) on every failure.
    metadata: CallbackMetadata | None = Field(default=None, alias="CallbackMetadata")


class CallbackBody(_Wire):
    stk_callback: StkCallbackPayload = Field(alias="stkCallback")


class CallbackEnvelope(_Wire):
    body: CallbackBody = Field(alias="Body")


class CallbackError(ValueError):
    """A callback body we cannot read; the message names the problem, not the values."""


@dataclass(frozen=True)
class StkCallback:
    """One STK callback, normalised. A claim, not a fact: confirm success by STK Query.

    `amount`, `receipt_number`, `transaction_date` and `phone` are None when the callback does
    not carry them (always on failure). `phone` is the payer as Daraja reports it; keep the
    number that was pushed to, since production callbacks may mask it (reference §3.1).
    """

    merchant_request_id: str | None
    checkout_request_id: str
    result_code: str
    result_desc: str
    succeeded: bool
    amount: int | None
    receipt_number: str | None
    transaction_date: datetime | None
    phone: str | None


def parse_callback(body: Mapping[str, Any]) -> StkCallback:
    """Read `Body.stkCallback`; raises CallbackError when it is not one we can trust."""
    try:
        payload = CallbackEnvelope.model_validate(body).body.stk_callback
    except ValidationError as error:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
        raise CallbackError(f"not an STK callback ({where})") from None
    code = result_code(payload.result_code)
    items = _items_by_name(payload.metadata)
    return StkCallback(
        merchant_request_id=(payload.merchant_request_id or "").strip() or None,
        checkout_request_id=payload.checkout_request_id,
        result_code=code,
        result_desc=payload.result_desc or "",
        succeeded=code == SUCCESS_CODE,
        amount=_optional(items, "Amount", whole_shillings),
        receipt_number=_optional(items, "MpesaReceiptNumber", _receipt),
        # Only informative: one that cannot be read is left out, not the whole callback.
        transaction_date=_readable(items, "TransactionDate", daraja_time),
        phone=_readable(items, "PhoneNumber", _phone),
    )


def result_code(text: str) -> str:
    """`0`, `"0"` and `0.0` are the same code (a JSON number may come with a fraction)."""
    code = text.strip()
    return code.split(".")[0] if _INTEGRAL_DECIMAL.fullmatch(code) else code


def _items_by_name(metadata: CallbackMetadata | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata.items if metadata else []:
        # The first of repeated names wins; a value-less item counts as absent.
        if item.value is not None and item.name not in found:
            found[item.name] = item.value
    return found


def _optional(items: dict[str, Any], name: str, convert: Callable[[Any], _T]) -> _T | None:
    value = items.get(name)
    if value is None:
        return None
    try:
        return convert(value)
    except (ValueError, TypeError, InvalidOperation):
        raise CallbackError(f"CallbackMetadata item {name} is not valid") from None


def _readable(items: dict[str, Any], name: str, convert: Callable[[Any], _T]) -> _T | None:
    try:
        return _optional(items, name, convert)
    except CallbackError:
        return None


def whole_shillings(value: Any) -> int:
    """`1`, `1.0`, `"1.00"` → 1; a fraction of a shilling or a non-number is refused.

    Decimal on the value's text, never float arithmetic, so 1.00 and 0.999… are told apart.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError("amount must be a number")
    amount = Decimal(str(value).strip())
    if not amount.is_finite() or amount != amount.to_integral_value() or amount < 0:
        raise ValueError("amount must be a whole, non-negative number of shillings")
    return int(amount)


def daraja_time(value: Any) -> datetime:
    """`20250314101552` (a JSON number, Nairobi wall time) → an aware UTC datetime."""
    if isinstance(value, bool):
        raise TypeError("time must be digits")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if len(text) != len("YYYYMMDDHHmmss") or not text.isdigit():
        raise ValueError("time must be YYYYMMDDHHmmss")
    local = datetime.strptime(text, _DARAJA_TIME_FORMAT).replace(tzinfo=NAIROBI)
    return local.astimezone(UTC)


def _receipt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("receipt number must be text")
    return value.strip()


def _phone(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("phone must be a number or text")
    text = str(value).strip()
    if not text:
        raise ValueError("phone is empty")
    return text
