"""WhatsApp (360dialog Cloud API) errors: the three wire shapes, parsed and classified.

Kinds (STYLE §8): `transient` — the request certainly did not take effect and may be retried
(connection refused, connect timeout, 429, 5xx, throughput codes); `rejected` — the provider
refused it and a retry cannot help (other 4xx); `ambiguous` — it may have been sent (the request
left, the answer was lost), which WhatsApp sends retry anyway since no idempotency key exists.

Error bodies come in three shapes, and a proxy in front may answer HTML or nothing at all:
  1. Meta Graph error: {"error": {"message", "type", "code", "error_data": {"details"}, …}}
     https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
  2. 360dialog gateway: {"meta": {"httpCode", "developerMessage", "success": false}}
     https://docs.360dialog.com/api/api-error-message-list
  3. newer 360dialog endpoints: {"error": "<string>"}
     https://docs.360dialog.com/docs/messaging-api/api-reference/webhooks
Build decisions on `code` (and `details`), never on titles, which Meta says it will drop.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Literal

import httpx

ErrorKind = Literal["transient", "rejected", "ambiguous"]

# Cloud API codes worth a retry with backoff: throughput (130429), pair rate (131056), unknown /
# service unavailable / generic (131000, 131016, 135000), maintenance mode (131057), Graph API
# call and WABA rate limits (4, 80007).
# https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
TRANSIENT_CODES: frozenset[int] = frozenset(
    {130429, 131056, 131000, 131016, 135000, 131057, 4, 80007}
)
# Error codes the webhook reports asynchronously that the product acts on.
REENGAGEMENT_REQUIRED = 131047
UNDELIVERABLE = 131026

_TITLE_MAX = 200
# Provider text is shown in logs and to operators: cut anything that looks like a phone number.
_DIGIT_RUN = re.compile(r"\+?\d{7,}")
# 360dialog answers its own endpoint rate limit with HTTP 400 and this wording in the message
# (https://docs.360dialog.com/api/api-error-message-list): a wait fixes it, so it is transient.
_GATEWAY_RATE_LIMIT = re.compile(r"rate limit", re.IGNORECASE)


class WhatsAppError(Exception):
    """A send or API call that did not succeed. `title` never carries a message body or phone."""

    def __init__(
        self,
        kind: ErrorKind,
        title: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        details: str | None = None,
    ) -> None:
        self.kind: ErrorKind = kind
        self.title = title
        self.code = code
        self.http_status = http_status
        self.details = details
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"{self.kind}: {self.title}"]
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        return " ".join(parts)

    @property
    def retryable(self) -> bool:
        return self.kind != "rejected"


def clean(text: str) -> str:
    """Provider text made safe to log: phone-like digit runs masked, length capped."""
    one_line = " ".join(text.split())
    return _DIGIT_RUN.sub("•••", one_line)[:_TITLE_MAX]


def classify(http_status: int | None, code: int | None) -> ErrorKind:
    """The kind of an error the provider answered (so the request reached it)."""
    if code is not None and code in TRANSIENT_CODES:
        return "transient"
    if http_status is not None and (http_status == 429 or http_status >= 500):
        return "transient"
    return "rejected"


def error_from_response(response: httpx.Response) -> WhatsAppError:
    """A WhatsAppError from a non-2xx answer in any of the three shapes, or none."""
    status = response.status_code
    parsed = _parse_body(response.content)
    code, title, details = parsed if parsed else (None, _status_title(response), None)
    kind = classify(status, code)
    if kind == "rejected" and code is None and _GATEWAY_RATE_LIMIT.search(title):
        kind = "transient"
    return WhatsAppError(
        kind,
        clean(title),
        code=code,
        http_status=status,
        details=clean(details) if details else None,
    )


def error_from_transport(error: httpx.TransportError) -> WhatsAppError:
    """A WhatsAppError for a request that got no HTTP answer.

    Only failures that happen before any byte of the request could reach 360dialog are
    transient: connect errors and timeouts, and waiting for a pooled connection. Everything later
    (read / write timeouts, a connection dropped mid-exchange) is ambiguous: the provider may
    have accepted the message, and nothing the client saw says otherwise.
    """
    name = type(error).__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return WhatsAppError("transient", f"could not connect ({name})")
    if isinstance(error, httpx.ProxyError):
        return WhatsAppError("transient", f"proxy failed ({name})")
    if isinstance(error, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return WhatsAppError("rejected", f"request could not be made ({name})")
    return WhatsAppError("ambiguous", f"no answer after sending ({name})")


def _parse_body(content: bytes) -> tuple[int | None, str, str | None] | None:
    """(code, title, details) from a JSON error body, or None when there is no usable one."""
    try:
        body: Any = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None  # HTML from a proxy, an empty body, …
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):  # shape 1: Meta Graph
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        message = error.get("message")
        return (
            _int(error.get("code")),
            message if isinstance(message, str) and message else "Graph API error",
            details if isinstance(details, str) else None,
        )
    if isinstance(error, str) and error:  # shape 3: newer 360dialog endpoints
        return None, error, None
    meta = body.get("meta")
    if isinstance(meta, dict):  # shape 2: 360dialog gateway
        message = meta.get("developerMessage") or meta.get("developer_message")
        return None, message if isinstance(message, str) and message else "gateway error", None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        # Webhook-style error objects, which some 360dialog answers also carry.
        first = errors[0]
        title = first.get("title") or first.get("message")
        return _int(first.get("code")), title if isinstance(title, str) else "error", None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def _status_title(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def graph_error_body(code: int, message: str, details: str | None = None) -> dict[str, Any]:
    """Shape 1, as Meta writes it (the title inside `message` with its `(#code)`)."""
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}",
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "A" + secrets.token_hex(10),
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


def gateway_error_body(http_status: int, message: str) -> dict[str, Any]:
    """Shape 2, 360dialog's own gateway answer (bad key, blocked path, upstream down)."""
    return {"meta": {"success": False, "httpCode": http_status, "developerMessage": message}}
