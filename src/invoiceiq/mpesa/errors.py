"""Daraja failures in four kinds, read from Daraja's `errorCode` and never from the HTTP status.

Daraja answers a wrong password, an unknown merchant, a phone busy with another prompt and a
query still being processed all as HTTP 500 `500.001.1001`, and an invalid token as a 404
(https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, "Error codes"): the status alone
would make us retry what no retry fixes. The gateway in front of it (Apigee) answers in its own
`{"fault": …}` shape, and error pages in HTML or with no body at all have been seen
(https://github.com/osenco/osen-wc-mpesa/issues/7), so every shape is classified here.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal

DarajaErrorKind = Literal["transient", "rejected", "ambiguous", "busy"]

INVALID_ACCESS_TOKEN: Final = "404.001.03"  # noqa: S105 - an error code, not a secret
INVALID_FIELD: Final = "400.002.02"
GENERIC_REQUEST_ERROR: Final = "500.001.1001"
# 500.003.02 spike arrest / system busy, 500.003.03 quota, 500.003.1001 internal error.
_GATEWAY_BUSY_PREFIX: Final = "500.003."
_THROTTLING_CODES: Final = frozenset({"500.003.02", "500.003.03"})
_OAUTH_PREFIX: Final = "400.008."

# Raw provider text is kept for logs only; this bounds what an HTML error page can put there.
_PROVIDER_TEXT_LIMIT: Final = 300
_INVALID_FIELD_NAME = re.compile(r"Invalid\s+([A-Za-z]+)")


class DarajaError(Exception):
    """A Daraja call that did not succeed.

    `kind`: `transient` (retry later with backoff), `rejected` (never retry as is), `busy` (a
    prompt is already open on the customer's phone: tell them to finish it, then try again) and
    `ambiguous` (the request may have been carried out: an STK push is never repeated then; the
    reconciler settles it with an STK Query). `message` is short and in our own words; the
    provider's own text is in `provider_message`, for logs only, never for people.
    """

    def __init__(
        self,
        kind: DarajaErrorKind,
        message: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        provider_message: str | None = None,
        request_id: str | None = None,
        invalid_field: str | None = None,
        token_refused: bool = False,
        pending: bool = False,
        throttled: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind: DarajaErrorKind = kind
        self.message = message
        self.error_code = error_code
        self.http_status = http_status
        self.provider_message = provider_message
        self.request_id = request_id
        # Which request field Daraja called invalid ("PhoneNumber" for "Invalid PhoneNumber").
        self.invalid_field = invalid_field
        # The access token was refused: the client refreshes it once and retries once.
        self.token_refused = token_refused
        # "The transaction is being processed": an STK Query reads this as "pending".
        self.pending = pending
        # Turned away at the gateway (429, spike arrest, quota): the request was not carried
        # out. Any other transient answer to a push may come after it was (`for_push`).
        self.throttled = throttled
        # The request as sent, Password removed, when the failure was an STK push (audit).
        self.request_body: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"DarajaError(kind={self.kind!r}, error_code={self.error_code!r}, "
            f"http_status={self.http_status!r}, message={self.message!r})"
        )


def classify_response(http_status: int, content: bytes) -> DarajaError:
    """The error a non-successful Daraja answer stands for, whatever shape its body has."""
    data = _json_object(content)
    if data is None:
        return _unreadable(http_status, content)
    fault = data.get("fault")
    if isinstance(fault, dict):
        return _apigee_fault(http_status, fault)
    code = data.get("errorCode")
    if isinstance(code, str | int) and not isinstance(code, bool):
        return _from_error_code(
            str(code).strip(),
            _text(data.get("errorMessage")),
            http_status,
            request_id=_text(data.get("requestId")),
        )
    return _by_status(http_status, _clip(content.decode("utf-8", "replace")))


def _from_error_code(
    code: str, provider: str | None, http_status: int, *, request_id: str | None
) -> DarajaError:
    fields: dict[str, Any] = {
        "error_code": code,
        "http_status": http_status,
        "provider_message": provider,
        "request_id": request_id,
    }
    said = (provider or "").lower()
    if code == INVALID_ACCESS_TOKEN:
        return _token_refused(fields)
    if code == GENERIC_REQUEST_ERROR:
        return _generic_request_error(said, fields)
    if code == INVALID_FIELD:
        match = _INVALID_FIELD_NAME.search(provider or "")
        field = match.group(1) if match else None
        message = f"M-PESA refused the request's {field}." if field else "M-PESA refused it."
        return DarajaError("rejected", message, invalid_field=field, **fields)
    if code.startswith(_OAUTH_PREFIX):
        return DarajaError("rejected", "M-PESA refused the token request.", **fields)
    if code.startswith(_GATEWAY_BUSY_PREFIX):
        return DarajaError(
            "transient",
            "M-PESA is busy; try again shortly.",
            throttled=code in _THROTTLING_CODES,
            **fields,
        )
    return _by_status(http_status, provider, error_code=code, request_id=request_id)


def _generic_request_error(said: str, fields: dict[str, Any]) -> DarajaError:
    """500.001.1001 covers several unrelated answers; only its message tells them apart
    (https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, "Error codes")."""
    if "unable to lock subscriber" in said:
        return DarajaError("busy", "Another M-PESA prompt is already open on that phone.", **fields)
    # The STK Query's standard answer while the customer has not acted yet, in two wordings
    # (https://github.com/safaricom/LNMOnlineAndroidSample/issues/13). For a push it means a
    # transaction is already under way on that phone, which is what "busy" says.
    if "being processed" in said or "under processing" in said:
        return DarajaError(
            "busy", "M-PESA is still processing that transaction.", pending=True, **fields
        )
    if "wrong credentials" in said:
        return DarajaError(
            "rejected",
            "M-PESA refused the password: check the shortcode, passkey and timestamp.",
            **fields,
        )
    if "merchant does not exist" in said:
        return DarajaError("rejected", "M-PESA does not know the business shortcode.", **fields)
    # Every documented 500.001.1001 is a request problem no retry fixes.
    return DarajaError("rejected", "M-PESA refused the request.", **fields)


def _apigee_fault(http_status: int, fault: dict[str, Any]) -> DarajaError:
    """The gateway's own errors, e.g. spike arrest, common in the sandbox (reference §2.6)."""
    detail = fault.get("detail")
    code = _text(detail.get("errorcode")) if isinstance(detail, dict) else None
    provider = _text(fault.get("faultstring"))
    marker = (code or "").lower()
    fields: dict[str, Any] = {
        "error_code": code,
        "http_status": http_status,
        "provider_message": provider,
    }
    if "spikearrest" in marker or "ratelimit" in marker or "quota" in marker:
        return DarajaError(
            "transient", "M-PESA is rate limiting us; try again shortly.", throttled=True, **fields
        )
    # Apigee's OAuth policy faults for an unknown or expired token
    # (https://cloud.google.com/apigee/docs/api-platform/reference/policies/oauth-v2-policy).
    if "invalidaccesstoken" in marker or "access_token" in marker or "accesstoken" in marker:
        return _token_refused(fields)
    return _by_status(http_status, provider, error_code=code)


def _token_refused(fields: dict[str, Any]) -> DarajaError:
    return DarajaError("rejected", "The access token was refused.", token_refused=True, **fields)


def _unreadable(http_status: int, content: bytes) -> DarajaError:
    text = content.decode("utf-8", "replace").strip()
    if not text:
        # A wrong consumer key or secret is answered 400 with an empty body (Byte-Barn/mpesakit
        # `mpesakit/auth/token_manager.py`); the token request names it more precisely.
        return _by_status(http_status, None, message_suffix="with an empty answer")
    return _by_status(http_status, _clip(text), message_suffix="with a page we cannot read")


def _by_status(
    http_status: int,
    provider: str | None,
    *,
    error_code: str | None = None,
    request_id: str | None = None,
    message_suffix: str = "",
) -> DarajaError:
    """Fallback when the body names no known code: 429 and 5xx are worth retrying."""
    suffix = f" {message_suffix}" if message_suffix else ""
    fields: dict[str, Any] = {
        "error_code": error_code,
        "http_status": http_status,
        "provider_message": provider,
        "request_id": request_id,
    }
    if http_status == 429 or http_status >= 500:
        return DarajaError(
            "transient",
            f"M-PESA failed{suffix}; try again shortly.",
            throttled=http_status == 429,
            **fields,
        )
    return DarajaError("rejected", f"M-PESA refused the request{suffix}.", **fields)


def for_push(error: DarajaError) -> DarajaError:
    """`error` as the answer to an STK push. A server failure answered after the request
    reached Daraja (500.003.1001, a 502/503/504 page) may come after the prompt went up, as a
    timeout after sending may: ambiguous, never pushed again. Only throttling is surely
    harmless to retry."""
    if error.kind != "transient" or error.throttled or error.http_status is None:
        return error
    return DarajaError(
        "ambiguous",
        "M-PESA failed while taking the push; it may have gone through.",
        error_code=error.error_code,
        http_status=error.http_status,
        provider_message=error.provider_message,
        request_id=error.request_id,
    )


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _clip(text: str) -> str:
    return text if len(text) <= _PROVIDER_TEXT_LIMIT else text[:_PROVIDER_TEXT_LIMIT] + "…"
