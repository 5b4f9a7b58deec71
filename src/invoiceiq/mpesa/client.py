"""Daraja's HTTP API (OAuth, M-PESA Express push and query): HTTP and the wire format only.

The client knows nothing of the database: the OAuth token is kept by a `TokenStore` (one
shared by every process in production, `token_store.DatabaseTokenStore`), because Daraja
invalidates the previous token whenever a new one is requested
(https://developer.safaricom.co.ke/apis/Authorization, FAQ).

Retries: the client retries exactly one thing itself, a call whose token was refused
(`404.001.03`): the token is invalidated, refreshed once and the call sent once more. That is
safe even for an STK push, because the gateway refused it before M-PESA saw it. Every other
failure is raised as a `DarajaError`; in particular an STK push that failed *ambiguously*
(timed out after it was sent) is never sent again here, since Daraja has no idempotency key and
a second push would put a second PIN prompt on the customer's phone (reference §0.9).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from invoiceiq.kit.clock import NAIROBI, utcnow
from invoiceiq.mpesa.errors import DarajaError, classify_response, for_push
from invoiceiq.mpesa.schemas import (
    SUCCESS_CODE,
    StkPushResponse,
    StkQueryResponse,
    TokenResponse,
    result_code,
)

logger = logging.getLogger(__name__)

TransactionType = Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"]
PAYBILL: Final = "CustomerPayBillOnline"
BUY_GOODS: Final = "CustomerBuyGoodsOnline"

TOKEN_PATH: Final = "/oauth/v1/generate"  # noqa: S105 - a path, not a secret
STK_PUSH_PATH: Final = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH: Final = "/mpesa/stkpushquery/v1/query"

# https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, request parameters.
ACCOUNT_REFERENCE_MAX: Final = 12
TRANSACTION_DESC_MAX: Final = 13
_TIMESTAMP_FORMAT: Final = "%Y%m%d%H%M%S"
# Special characters (`@ # &`) have been reported to break requests: letters and digits only.
_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]")
# The wire format Daraja takes (12 digits, 254…). Whether the number is a mobile subscriber is
# Daraja's call (`400.002.02 Invalid PhoneNumber`); the app normalises numbers before this.
_MSISDN = re.compile(r"254\d{9}")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime


class TokenStore(Protocol):
    """Where the OAuth token lives between calls; one refresh at a time across its users."""

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]]) -> str:
        """A valid token, calling `fetch` only when none is valid."""
        ...

    async def invalidate(self, token: str) -> None:
        """Forget `token` (Daraja refused it) unless it was already replaced."""
        ...


@dataclass(frozen=True)
class StkPushAccepted:
    """Daraja accepted the push for processing. Not a payment: the callback or a query says
    how it ended. `request_body` is what was sent, without the Password, for the audit trail."""

    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    customer_message: str | None
    request_body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StkQueryResult:
    """`pending` while the customer has not acted; `success` only for ResultCode 0."""

    state: Literal["pending", "success", "failed"]
    result_code: str | None
    result_desc: str | None


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(shortcode + passkey + timestamp), from the same values the body carries."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def daraja_timestamp(moment: datetime) -> str:
    """`YYYYMMDDHHmmss` in Africa/Nairobi time: servers in UTC that send their own wall time
    fail (https://github.com/bnjunge/MPESA-API-Tutorial/issues/1)."""
    if moment.tzinfo is None:
        raise ValueError("the clock must give timezone-aware datetimes")
    return moment.astimezone(NAIROBI).strftime(_TIMESTAMP_FORMAT)


def clean_account_reference(value: str) -> str:
    """Letters and digits only, 1–12 of them; otherwise a rejected DarajaError.

    Never truncated: the reference is the invoice number the payment is traced by.
    """
    cleaned = _NOT_ALPHANUMERIC.sub("", value)
    if not cleaned or len(cleaned) > ACCOUNT_REFERENCE_MAX:
        raise _refused(
            "AccountReference", f"must have 1 to {ACCOUNT_REFERENCE_MAX} letters or digits"
        )
    return cleaned


def clean_transaction_desc(value: str) -> str:
    """Letters and digits only, cut to 13; empty is refused (a null TransactionDesc gets
    `400.002.02 Invalid Remarks`, https://github.com/navariltd/frappe-mpsa-payments/pull/123)."""
    cleaned = _NOT_ALPHANUMERIC.sub("", value)[:TRANSACTION_DESC_MAX]
    if not cleaned:
        raise _refused("TransactionDesc", "must have at least one letter or digit")
    return cleaned


class DarajaClient:
    """One Daraja app (consumer key and secret) and one shortcode."""

    def __init__(
        self,
        *,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        transaction_type: TransactionType,
        party_b: str | None,
        http: httpx.AsyncClient,
        tokens: TokenStore,
        clock: Clock = utcnow,
    ) -> None:
        if transaction_type not in (PAYBILL, BUY_GOODS):
            raise ValueError(f"unknown transaction type {transaction_type!r}")
        # A till (Buy Goods) is credited through PartyB, while the password is built from the
        # store/HO shortcode (https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, FAQ
        # 10); a wrong pair ends in ResultCode 2028 or SFC_IC0003.
        if transaction_type == BUY_GOODS and not party_b:
            raise ValueError("CustomerBuyGoodsOnline needs party_b, the till number")
        self._base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(consumer_key, consumer_secret)
        self._shortcode = shortcode
        self._passkey = passkey
        self._transaction_type = transaction_type
        self._party_b = party_b if transaction_type == BUY_GOODS and party_b else shortcode
        self._http = http
        self._tokens = tokens
        self._clock = clock

    def __repr__(self) -> str:  # never the secrets
        return f"DarajaClient(base_url={self._base_url!r}, shortcode={self._shortcode!r})"

    async def fetch_token(self) -> AccessToken:
        """A new OAuth token (which invalidates the previous one); stores call this."""
        issued_at = self._now()
        try:
            response = await self._http.get(
                self._base_url + TOKEN_PATH,
                params={"grant_type": "client_credentials"},
                auth=self._auth,
            )
        except httpx.HTTPError as error:
            raise _transport_error(error, may_have_acted=False) from error
        if response.status_code != 200:
            raise _token_refusal(classify_response(response.status_code, response.content))
        try:
            answer = TokenResponse.model_validate_json(response.content)
        except ValidationError:
            raise DarajaError(
                "transient", "M-PESA sent a token answer we cannot read.", http_status=200
            ) from None
        return AccessToken(answer.access_token, issued_at + timedelta(seconds=answer.expires_in))

    async def stk_push(
        self,
        *,
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        callback_url: str,
    ) -> StkPushAccepted:
        """Ask M-PESA to show a PIN prompt on `phone` (2547…/2541…) for `amount` shillings.

        Raises DarajaError. Never retried here after an ambiguous failure (see the module doc).
        """
        body = self._push_body(
            phone=phone,
            amount=amount,
            reference=account_reference,
            description=description,
            callback_url=callback_url,
        )
        audit = _audit_copy(body)
        try:
            data = await self._post(STK_PUSH_PATH, body, may_have_acted=True)
        except DarajaError as error:
            error.request_body = audit
            raise
        try:
            answer = StkPushResponse.model_validate(data)
        except ValidationError:
            # A 200 we cannot read may still have raised the prompt.
            raise _audited(
                DarajaError("ambiguous", "M-PESA accepted the push with an answer we cannot read."),
                audit,
            ) from None
        if answer.response_code != SUCCESS_CODE:
            raise _audited(
                DarajaError(
                    "rejected",
                    "M-PESA did not accept the push.",
                    error_code=answer.response_code,
                    http_status=200,
                    provider_message=answer.response_description,
                ),
                audit,
            )
        return StkPushAccepted(
            merchant_request_id=answer.merchant_request_id,
            checkout_request_id=answer.checkout_request_id,
            response_code=answer.response_code,
            customer_message=answer.customer_message,
            request_body=audit,
        )

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        """How a push ended, as far as M-PESA knows now. The query never carries the receipt
        number (https://developer.safaricom.co.ke/apis/MpesaExpressQuery)."""
        if not checkout_request_id.strip():
            raise _refused("CheckoutRequestID", "is empty")
        timestamp = daraja_timestamp(self._now())
        body = {
            "BusinessShortCode": self._shortcode,
            "Password": stk_password(self._shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        try:
            data = await self._post(STK_QUERY_PATH, body, may_have_acted=False)
        except DarajaError as error:
            # Until the customer acts the query answers with an error body, 500.001.1001
            # "The transaction is being processed" (reference §4).
            if error.pending:
                return StkQueryResult("pending", None, None)
            raise
        try:
            answer = StkQueryResponse.model_validate(data)
        except ValidationError:
            raise DarajaError("transient", "M-PESA sent a query answer we cannot read.") from None
        if answer.result_code is None:
            return StkQueryResult("pending", None, answer.result_desc)
        code = result_code(answer.result_code)
        state: Literal["success", "failed"] = "success" if code == SUCCESS_CODE else "failed"
        return StkQueryResult(state, code, answer.result_desc)

    def _push_body(
        self, *, phone: str, amount: int, reference: str, description: str, callback_url: str
    ) -> dict[str, Any]:
        if not _MSISDN.fullmatch(phone):
            raise _refused("PhoneNumber", "must be 12 digits starting 254")
        # Whole shillings only: Daraja refuses decimals (reference §0.7).
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise _refused("Amount", "must be a whole number of shillings, at least 1")
        timestamp = daraja_timestamp(self._now())
        return {
            "BusinessShortCode": self._shortcode,
            "Password": stk_password(self._shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": self._transaction_type,
            "Amount": amount,
            "PartyA": phone,
            "PartyB": self._party_b,
            "PhoneNumber": phone,
            "CallBackURL": _callback_url(callback_url),
            "AccountReference": clean_account_reference(reference),
            "TransactionDesc": clean_transaction_desc(description),
        }

    async def _token(self, *, refused: str | None = None) -> str:
        """The token from the store (`refused` forgotten first); the store's own failure (its
        database) is transient: nothing went to Daraja, so a push can safely be tried again."""
        try:
            if refused is not None:
                await self._tokens.invalidate(refused)
            return await self._tokens.get(self.fetch_token)
        except DarajaError:
            raise
        except Exception as error:
            logger.warning("daraja token store failed", extra={"error": type(error).__name__})
            raise DarajaError(
                "transient", "Could not reach M-PESA.", provider_message=type(error).__name__
            ) from error

    async def _post(self, path: str, body: dict[str, Any], *, may_have_acted: bool) -> Any:
        token = await self._token()
        try:
            return await self._post_once(path, body, token, may_have_acted=may_have_acted)
        except DarajaError as error:
            if not error.token_refused:
                raise
        # Another process (or app) minted a newer token, or ours expired early
        # (https://developer.safaricom.co.ke/apis/Authorization, FAQ): refresh once, retry once.
        token = await self._token(refused=token)
        return await self._post_once(path, body, token, may_have_acted=may_have_acted)

    async def _post_once(
        self, path: str, body: dict[str, Any], token: str, *, may_have_acted: bool
    ) -> Any:
        try:
            # json= sends Content-Type: application/json; without it Daraja answers
            # "Invalid BusinessShortCode" (https://developer.safaricom.co.ke/apis/
            # MpesaExpressSimulate, FAQ 9).
            response = await self._http.post(
                self._base_url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as error:
            raise _transport_error(error, may_have_acted=may_have_acted) from error
        data: Any = None
        if response.is_success:
            try:
                data = response.json()
            except ValueError:
                data = None
            # Daraja's error shape is sometimes sent with a 2xx; read it as the error it is.
            if isinstance(data, dict) and "errorCode" not in data and "fault" not in data:
                return data
        failure = classify_response(response.status_code, response.content)
        if may_have_acted:
            failure = for_push(failure)
        if response.is_success and failure.kind == "rejected" and failure.error_code is None:
            # A 2xx that is no answer at all: for a push, the prompt may be up already.
            failure = DarajaError(
                "ambiguous" if may_have_acted else "transient",
                "M-PESA sent an answer we cannot read.",
                http_status=response.status_code,
            )
        # "Still being processed" is the usual answer to a query while the customer decides.
        logger.log(
            logging.INFO if failure.pending else logging.WARNING,
            "daraja call failed",
            extra={
                "path": path,
                "kind": failure.kind,
                "error_code": failure.error_code,
                "http_status": failure.http_status,
                "provider_message": failure.provider_message,
            },
        )
        raise failure

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise ValueError("the clock must give timezone-aware datetimes")
        return moment


def _callback_url(value: str) -> str:
    url = value.strip()
    parts = urlsplit(url)
    # Stray spaces and non-http(s) URLs get `400.002.02 Invalid CallBackURL`
    # (https://github.com/safaricom/LNMOnlineAndroidSample/issues/40).
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        raise _refused("CallBackURL", "must be an http(s) URL without spaces")
    return url


def _audit_copy(body: dict[str, Any]) -> dict[str, Any]:
    """The push as sent, for the payment's audit trail, without its secrets: no Password, and
    the CallBackURL's last segment (the callback path secret) hidden."""
    audit = {key: value for key, value in body.items() if key != "Password"}
    url = str(audit.get("CallBackURL", ""))
    head, slash, _secret = url.rpartition("/")
    if slash and "://" in head:
        audit["CallBackURL"] = f"{head}/•••"
    return audit


def _audited(error: DarajaError, request_body: dict[str, Any]) -> DarajaError:
    error.request_body = request_body
    return error


def _refused(field_name: str, why: str) -> DarajaError:
    """Our own validation, before anything is sent: nothing reached Daraja."""
    return DarajaError("rejected", f"{field_name} {why}.", invalid_field=field_name)


def _token_refusal(error: DarajaError) -> DarajaError:
    if error.kind == "rejected" and error.error_code is None:
        # A wrong key or secret: 400 with an empty body (Byte-Barn/mpesakit token_manager.py).
        error.message = "M-PESA refused the consumer key or secret."
        error.args = (error.message,)
    return error


def _transport_error(error: httpx.HTTPError, *, may_have_acted: bool) -> DarajaError:
    """Connect failures never reached Daraja: transient. Anything after the request went out
    (read/write timeouts, a dropped connection) may have been acted on: ambiguous for a push,
    transient for calls without effects (a query; a token request only replaces the token)."""
    never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if never_sent or not may_have_acted:
        reason = "Could not reach M-PESA." if never_sent else "M-PESA did not answer in time."
        return DarajaError("transient", reason, provider_message=type(error).__name__)
    return DarajaError(
        "ambiguous",
        "M-PESA did not answer in time; the push may have gone through.",
        provider_message=type(error).__name__,
    )
