"""The Daraja fake's request checks: the fields of a push or query, and the errors refusing them.

Each check raises `Refusal`, which the fake's route handler turns into Daraja's answer; the error
shape is https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, "Error response".
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import JSONResponse

# A sandbox-era per-transaction maximum (reference §6); larger amounts get "Invalid Amount".
MAX_AMOUNT: Final = 150_000

GENERIC: Final = "500.001.1001"
SHORTCODE = re.compile(r"\d{5,7}")
TIMESTAMP = re.compile(r"\d{14}")
_INVALID_FIELD: Final = "400.002.02"
_MSISDN = re.compile(r"254(7|1)\d{8}")


class Refusal(Exception):
    """A Daraja error answer, raised from deep in the checks and rendered by the handler."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status)
        return JSONResponse(self.body, status_code=self.status)


def error(status: int, code: str, message: str, request_id: str | None = None) -> Refusal:
    # https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, "Error response".
    body = {"requestId": request_id or _request_id(), "errorCode": code, "errorMessage": message}
    return Refusal(status, body)


def invalid(field: str) -> Refusal:
    return error(400, _INVALID_FIELD, f"Bad Request - Invalid {field}")


def spike_arrest() -> Refusal:
    # The gateway's own fault shape (reference §2.6), with Apigee's 429.
    fault = {
        "faultstring": "Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=5}",
        "detail": {"errorcode": "policies.ratelimit.SpikeArrestViolation"},
    }
    return Refusal(429, {"fault": fault})


@dataclass(frozen=True)
class Push:
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    transaction_type: str
    party_b: str


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise invalid("JSON") from None
    if not isinstance(body, dict):
        raise invalid("JSON")
    return body


def field(body: dict[str, Any], name: str) -> str:
    """A required value; Daraja takes "Numeric" fields as numbers or strings alike."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise invalid(name)
    return str(value).strip()


def matching(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = field(body, name)
    if not pattern.fullmatch(value):
        raise invalid(name)
    return value


def msisdn(body: dict[str, Any], name: str) -> str:
    """12 digits, 2547… or 2541… (newer Safaricom numbers: SmoDav/mpesa#49)."""
    return matching(body, name, _MSISDN)


def bounded(body: dict[str, Any], name: str, limit: int, called: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise invalid(called)
    return value


def amount(value: Any) -> int:
    """Whole shillings from 1 up (reference §0.7), as a number or a string of digits."""
    if isinstance(value, bool):
        raise invalid("Amount")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_AMOUNT:
        raise invalid("Amount")
    return value


def callback_url(value: Any) -> str:
    if not isinstance(value, str) or re.search(r"\s", value):
        raise invalid("CallBackURL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("CallBackURL")
    return value


def basic_credentials(header: str | None) -> tuple[bytes, bytes]:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        raise error(400, "400.008.01", "Invalid authentication type passed")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise error(400, "400.008.01", "Invalid authentication type passed") from None
    key, colon, secret = decoded.partition(b":")
    if not colon:
        raise error(400, "400.008.01", "Invalid authentication type passed")
    return key, secret


def _request_id() -> str:
    # Shaped like the documented sample "1c5b-4ba8-815c-ac45c57a3db01495926".
    return f"{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-" + (
        secrets.token_hex(6) + str(secrets.randbelow(10**7)).zfill(7)
    )
