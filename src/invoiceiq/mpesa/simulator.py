"""The Daraja side of the simulator (DESIGN §8): OAuth, STK push and STK Query, in memory.

It follows Daraja's documented rules and error shapes (reference/daraja-mpesa.md; the official
pages are https://developer.safaricom.co.ke/apis/{Authorization,MpesaExpressSimulate,
MpesaExpressQuery}) so the app's real client can be tested against it over HTTP. Where Daraja is
not documented, the choice is written down next to the code. Deliberate differences: loopback
and plain-http CallBackURLs are accepted (real Daraja wants public HTTPS), and the gateway
faults (`faults.daraja`) apply to the push and the query, not to the token request.

State lives in memory and changes only under a lock that is never held across an `await`, so
concurrent requests (and the control API) see consistent prompts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from invoiceiq.kit.clock import NAIROBI, utcnow
from invoiceiq.simulator.config import PromptAction, SimulatorConfig, SimulatorSettings

logger = logging.getLogger(__name__)

PAYBILL: Final = "CustomerPayBillOnline"
BUY_GOODS: Final = "CustomerBuyGoodsOnline"

# What the customer's phone answers, as (ResultCode, ResultDesc) of the official result list.
ACTION_RESULTS: Final[dict[str, tuple[int, str]]] = {
    "accept": (0, "The service request is processed successfully."),
    "cancel": (1032, "Request cancelled by user"),
    "timeout": (1037, "DS timeout user cannot be reached"),
    "wrong_pin": (2001, "The initiator information is invalid."),
    "insufficient_funds": (1, "The balance is insufficient for the transaction."),
}
# Results M-PESA gives without showing a prompt at all.
RULE_LIMITED: Final = (17, "Rule limited.")
NOT_PERMITTED: Final = (2028, "The request is not permitted according to product assignment.")
NO_OPERATOR: Final = ("SFC_IC0003", "The operator does not exist.")

# The same amount to the same phone within 2 minutes ends in ResultCode 17 (official list);
# the window is `SimulatorConfig.rule_limit_window_s`, so tests can shrink it.
# Daraja documents no tolerance for the Timestamp; a few minutes catches a UTC clock (3 h off).
TIMESTAMP_SKEW: Final = timedelta(minutes=5)
# A sandbox-era per-transaction maximum (reference §6); larger amounts get "Invalid Amount".
MAX_AMOUNT: Final = 150_000

_INVALID_FIELD: Final = "400.002.02"
_INVALID_TOKEN: Final = "404.001.03"  # noqa: S105 - an error code, not a secret
_GENERIC: Final = "500.001.1001"
_LOCKED: Final = (
    "Unable to lock subscriber, a transaction is already in process for the current subscriber"
)
_MSISDN = re.compile(r"254(7|1)\d{8}")
_SHORTCODE = re.compile(r"\d{5,7}")
_TIMESTAMP = re.compile(r"\d{14}")
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits
_RECEIPT_ALPHABET: Final = string.ascii_uppercase + string.digits


class _Refusal(Exception):
    """A Daraja error answer, raised from deep in the checks and rendered by the handler."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status)
        return JSONResponse(self.body, status_code=self.status)


def _error(status: int, code: str, message: str, request_id: str | None = None) -> _Refusal:
    # https://developer.safaricom.co.ke/apis/MpesaExpressSimulate, "Error response".
    body = {"requestId": request_id or _request_id(), "errorCode": code, "errorMessage": message}
    return _Refusal(status, body)


def _invalid(field: str) -> _Refusal:
    return _error(400, _INVALID_FIELD, f"Bad Request - Invalid {field}")


def _spike_arrest() -> _Refusal:
    # The gateway's own fault shape (reference §2.6), with Apigee's 429.
    fault = {
        "faultstring": "Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=5}",
        "detail": {"errorcode": "policies.ratelimit.SpikeArrestViolation"},
    }
    return _Refusal(429, {"fault": fault})


@dataclass
class _Prompt:
    checkout_request_id: str
    merchant_request_id: str
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    at: datetime
    state: Literal["open", "answered"] = "open"
    result_code: int | str | None = None
    result_desc: str | None = None
    answered_at: datetime | None = None
    receipt: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "checkout_request_id": self.checkout_request_id,
            "merchant_request_id": self.merchant_request_id,
            "phone": self.phone,
            "amount": self.amount,
            "account_reference": self.account_reference,
            "state": self.state,
            "result_code": None if self.result_code is None else str(self.result_code),
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class _Push:
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    transaction_type: str
    party_b: str


class DarajaFake:
    """One Daraja app and one business account: a PayBill (`party_b` None or the shortcode) or
    a till (`party_b` the till number, `shortcode` its store/HO number)."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        http: httpx.AsyncClient,
        party_b: str | None = None,
        token_ttl_s: int = 3599,
    ) -> None:
        self._settings = settings
        self._credentials = (consumer_key.encode(), consumer_secret.encode())
        self._shortcode = shortcode
        self._passkey = passkey
        self._http = http
        till = party_b is not None and party_b != shortcode
        self._transaction_type = BUY_GOODS if till else PAYBILL
        self._party_b = party_b if till and party_b else shortcode
        self._token_ttl_s = token_ttl_s
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._release_holds = asyncio.Event()
        self._forget()
        self.router = self._build_router()

    def _forget(self) -> None:
        self._token: tuple[str, float] | None = None
        self._prompts: dict[str, _Prompt] = {}
        self._last_push: dict[tuple[str, int], float] = {}
        self._receipts: set[str] = set()
        self._queues: dict[str, deque[PromptAction]] = {}
        self._queues_from: SimulatorConfig | None = None

    def _build_router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        router.add_api_route("/oauth/v1/generate", self._generate_token, methods=["GET"])
        router.add_api_route(
            "/mpesa/stkpush/v1/processrequest", self._process_request, methods=["POST"]
        )
        router.add_api_route("/mpesa/stkpushquery/v1/query", self._query, methods=["POST"])
        return router

    # The control side (DESIGN §8: /simulator/mpesa/prompts).

    def prompts(
        self, *, phone: str | None = None, state: Literal["open", "answered"] | None = None
    ) -> list[dict[str, Any]]:
        """Prompts oldest first, optionally of one phone and/or in one state."""
        with self._lock:
            found = list(self._prompts.values())
        return [
            prompt.view()
            for prompt in found
            if (phone is None or prompt.phone == phone) and (state is None or prompt.state == state)
        ]

    async def answer(
        self, checkout_request_id: str, action: PromptAction, delay_ms: int = 0
    ) -> dict[str, Any]:
        """Answer an open prompt as its customer; its callback follows after `delay_ms`.

        KeyError: no such prompt. ValueError: already answered (or an unknown action).
        """
        if action not in ACTION_RESULTS:
            raise ValueError(f"unknown action {action!r}")
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        code, desc = ACTION_RESULTS[action]
        with self._lock:
            prompt = self._prompts[checkout_request_id]
            if prompt.state != "open":
                raise ValueError("that prompt was already answered")
            self._settle(prompt, code, desc)
            view = prompt.view()
        self._send_callback(prompt, delay_ms)
        return view

    def reset(self) -> None:
        """Forget tokens, prompts and history; stop pending answers and callbacks."""
        self._cancel_tasks()
        self._release_holds.set()
        self._release_holds = asyncio.Event()
        with self._lock:
            self._forget()

    async def aclose(self) -> None:
        """Stop timers and callbacks, and answer held requests now. `http` is the caller's."""
        self._release_holds.set()
        tasks = self._cancel_tasks()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cancel_tasks(self) -> list[asyncio.Task[None]]:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    # OAuth: https://developer.safaricom.co.ke/apis/Authorization

    async def _generate_token(self, request: Request) -> Response:
        try:
            if request.query_params.get("grant_type") != "client_credentials":
                raise _error(400, "400.008.02", "Invalid grant type passed")
            key, secret = _basic_credentials(request.headers.get("authorization"))
            known_key, known_secret = self._credentials
            # Both compared, whatever the first gives, so timing does not tell which was wrong.
            matches = hmac.compare_digest(key, known_key) & hmac.compare_digest(
                secret, known_secret
            )
            if not matches:
                # A wrong key or secret: 400 with an empty body (Byte-Barn/mpesakit
                # `mpesakit/auth/token_manager.py`).
                raise _Refusal(400, None)
        except _Refusal as refusal:
            return refusal.response()
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(28))
        with self._lock:
            # A new token invalidates the previous one (Authorization FAQ).
            self._token = (token, time.monotonic() + self._token_ttl_s)
        # `expires_in` as the string many real answers carry (reference §1).
        return JSONResponse({"access_token": token, "expires_in": str(self._token_ttl_s)})

    # STK push: https://developer.safaricom.co.ke/apis/MpesaExpressSimulate

    async def _process_request(self, request: Request) -> Response:
        fault, hold = self._gateway_faults(may_time_out=True)
        try:
            if fault:
                raise fault
            self._authorise(request)
            push = self._validate_push(await _json_body(request))
            prompt = self._open_prompt(push)
            response: Response = JSONResponse(
                {
                    "MerchantRequestID": prompt.merchant_request_id,
                    "CheckoutRequestID": prompt.checkout_request_id,
                    "ResponseCode": "0",
                    "ResponseDescription": "Success. Request accepted for processing",
                    "CustomerMessage": "Success. Request accepted for processing",
                }
            )
        except _Refusal as refusal:
            response = refusal.response()
        if hold:
            await self._hold()
        return response

    def _validate_push(self, body: dict[str, Any]) -> _Push:
        shortcode, timestamp, password = self._credential_fields(body)
        transaction_type = _field(body, "TransactionType")
        if transaction_type not in (PAYBILL, BUY_GOODS):
            raise _invalid("TransactionType")
        push = _Push(
            phone=_msisdn(body, "PhoneNumber"),
            amount=_amount(body.get("Amount")),
            account_reference=_bounded(body, "AccountReference", 12, "AccountReference"),
            callback_url=_callback_url(body.get("CallBackURL")),
            transaction_type=transaction_type,
            party_b=_matching(body, "PartyB", _SHORTCODE),
        )
        _msisdn(body, "PartyA")
        # Optional in the current docs, but a null or empty one gets "Invalid Remarks"
        # (https://github.com/navariltd/frappe-mpsa-payments/pull/123).
        if "TransactionDesc" in body:
            _bounded(body, "TransactionDesc", 13, "Remarks")
        self._check_credentials(shortcode, timestamp, password)
        return push

    def _open_prompt(self, push: _Push) -> _Prompt:
        now = utcnow()
        with self._lock:
            if any(p.state == "open" and p.phone == push.phone for p in self._prompts.values()):
                raise _error(500, _GENERIC, _LOCKED)
            outcome = self._outcome_without_prompt(push)
            prompt = _Prompt(
                checkout_request_id=self._new_checkout_id(push.phone, now),
                merchant_request_id=_merchant_request_id(),
                phone=push.phone,
                amount=push.amount,
                account_reference=push.account_reference,
                callback_url=push.callback_url,
                at=now,
            )
            self._prompts[prompt.checkout_request_id] = prompt
            if outcome is None:
                self._last_push[(push.phone, push.amount)] = time.monotonic()
            else:
                self._settle(prompt, *outcome)
        if outcome is None:
            self._start_timers(prompt)
        else:
            self._send_callback(prompt, 0)
        return prompt

    def _outcome_without_prompt(self, push: _Push) -> tuple[int | str, str] | None:
        """Accepted pushes M-PESA ends at once, without a prompt on the phone."""
        # A till needs CustomerBuyGoodsOnline with the till in PartyB, a PayBill its own
        # shortcode; otherwise 2028 or SFC_IC0003 (MpesaExpressSimulate, FAQ 10, result codes).
        if push.transaction_type != self._transaction_type:
            return NOT_PERMITTED
        if push.party_b != self._party_b:
            return NO_OPERATOR
        last = self._last_push.get((push.phone, push.amount))
        window = self._settings.config.rule_limit_window_s
        if last is not None and time.monotonic() - last < window:
            return RULE_LIMITED
        return None

    # STK Query: https://developer.safaricom.co.ke/apis/MpesaExpressQuery

    async def _query(self, request: Request) -> Response:
        fault, _ = self._gateway_faults(may_time_out=False)
        try:
            if fault:
                raise fault
            self._authorise(request)
            body = await _json_body(request)
            self._check_credentials(*self._credential_fields(body))
            checkout_request_id = _field(body, "CheckoutRequestID")
            with self._lock:
                prompt = self._prompts.get(checkout_request_id)
                answered = prompt is not None and prompt.state == "answered"
            if prompt is None:
                raise _invalid("CheckoutRequestID")
            if not answered:
                # The standard answer while the customer has not acted (reference §4).
                raise _error(
                    500, _GENERIC, "The transaction is being processed", checkout_request_id
                )
        except _Refusal as refusal:
            return refusal.response()
        return JSONResponse(
            {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successfully",
                "MerchantRequestID": prompt.merchant_request_id,
                "CheckoutRequestID": prompt.checkout_request_id,
                # Strings here, unlike the callback (MpesaExpressQuery sample).
                "ResultCode": str(prompt.result_code),
                "ResultDesc": prompt.result_desc,
            }
        )

    # Checks shared by the push and the query.

    def _gateway_faults(self, *, may_time_out: bool) -> tuple[_Refusal | None, bool]:
        """Seeded faults, rolled in a fixed order so a seed repeats the same run."""
        faults = self._settings.config.faults.daraja
        dice = self._settings.dice
        if dice.roll(faults.spike_arrest):
            return _spike_arrest(), False
        if dice.roll(faults.error_5xx):
            return _error(500, "500.003.1001", "Internal Server Error"), False
        return None, may_time_out and dice.roll(faults.timeout_after)

    def _authorise(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            current = self._token
        valid = (
            current is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(token.strip().encode(), current[0].encode())
            and time.monotonic() < current[1]
        )
        if not valid:
            raise _error(404, _INVALID_TOKEN, "Invalid Access Token")
        # Without a JSON content type Daraja misreads the body (MpesaExpressSimulate, FAQ 9).
        if "application/json" not in request.headers.get("content-type", "").lower():
            raise _invalid("BusinessShortCode")

    def _credential_fields(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        shortcode = _matching(body, "BusinessShortCode", _SHORTCODE)
        timestamp = _matching(body, "Timestamp", _TIMESTAMP)
        try:
            sent_at = datetime.strptime(timestamp, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
        except ValueError:
            raise _invalid("Timestamp") from None
        if abs(utcnow() - sent_at) > TIMESTAMP_SKEW:
            raise _invalid("Timestamp")
        password = body.get("Password")
        return shortcode, timestamp, password if isinstance(password, str) else None

    def _check_credentials(self, shortcode: str, timestamp: str, password: str | None) -> None:
        if shortcode != self._shortcode:
            raise _error(500, _GENERIC, "Merchant does not exist")
        expected = base64.b64encode(f"{shortcode}{self._passkey}{timestamp}".encode())
        if password is None or not hmac.compare_digest(password.encode(), expected):
            raise _error(500, _GENERIC, "Wrong credentials")

    async def _hold(self) -> None:
        """A simulated timeout: the answer comes only after the client has given up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release_holds.wait(), self._settings.config.timeout_hold_s)

    # Prompt lifecycle and callbacks.

    def _settle(self, prompt: _Prompt, code: int | str, desc: str) -> None:
        """Called with the lock held."""
        prompt.state = "answered"
        prompt.result_code = code
        prompt.result_desc = desc
        prompt.answered_at = utcnow()
        if code == 0:
            prompt.receipt = self._new_receipt(prompt.answered_at)

    def _start_timers(self, prompt: _Prompt) -> None:
        config = self._settings.config
        self._spawn(
            self._answer_later(prompt.checkout_request_id, "timeout", config.prompt_timeout_s)
        )
        action = self._auto_action(prompt.phone, config)
        if action is not None:
            delay_s = config.auto_answer.delay_ms / 1000
            self._spawn(self._answer_later(prompt.checkout_request_id, action, delay_s))

    def _auto_action(self, phone: str, config: SimulatorConfig) -> PromptAction | None:
        """The phone's queue first (each prompt takes the next answer), else the default."""
        with self._lock:
            if self._queues_from is not config:
                # The config was replaced (PUT /simulator/config): start its queues afresh,
                # without consuming the lists of the config object itself.
                self._queues = {p: deque(a) for p, a in config.auto_answer.phones.items()}
                self._queues_from = config
            queue = self._queues.get(phone)
            if queue:
                return queue.popleft()
        return config.auto_answer.default

    async def _answer_later(
        self, checkout_request_id: str, action: PromptAction, after_s: float
    ) -> None:
        await asyncio.sleep(after_s)
        # Already answered by someone else, or forgotten by a reset: nothing to do.
        with contextlib.suppress(KeyError, ValueError):
            await self.answer(checkout_request_id, action)

    def _send_callback(self, prompt: _Prompt, delay_ms: int) -> None:
        faults = self._settings.config.faults.callbacks
        dice = self._settings.dice
        # Rolled now, not inside the delivery task, so the dice are used in a repeatable order.
        if dice.roll(faults.drop):
            logger.info(
                "simulated callback dropped", extra={"checkout": prompt.checkout_request_id}
            )
            return
        copies = 2 if dice.roll(faults.duplicate) else 1
        payload = _callback_body(prompt)
        delay_s = (delay_ms + faults.delay_ms) / 1000
        self._spawn(self._deliver(prompt.callback_url, payload, copies, delay_s))

    async def _deliver(
        self, url: str, payload: dict[str, Any], copies: int, delay_s: float
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        for _ in range(copies):
            try:
                response = await self._http.post(url, json=payload)
            except httpx.HTTPError as error:
                # Daraja does not retry a callback it could not deliver (reference §3.6).
                logger.warning("simulated callback not delivered: %s", type(error).__name__)
                return
            if not response.is_success:
                logger.warning("simulated callback answered %s", response.status_code)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_checkout_id(self, phone: str, now: datetime) -> str:
        """`ws_CO_` + Nairobi date and time + milliseconds + the phone's national digits, as the
        documented samples look; called with the lock held."""
        stamp = now.astimezone(NAIROBI).strftime("%d%m%Y%H%M%S")
        millis = now.microsecond // 1000
        while True:
            candidate = f"ws_CO_{stamp}{millis:03d}{phone[3:]}"
            if candidate not in self._prompts:
                return candidate
            millis = (millis + 1) % 1000

    def _new_receipt(self, at: datetime) -> str:
        """10 characters like `TCE4XK7Q2M`: M-PESA's first letter moves on each year (S in
        2024, T in 2025); called with the lock held."""
        year_letter = string.ascii_uppercase[(at.year - 2006) % 26]
        while True:
            receipt = year_letter + "".join(secrets.choice(_RECEIPT_ALPHABET) for _ in range(9))
            if receipt not in self._receipts:
                self._receipts.add(receipt)
                return receipt


def _callback_body(prompt: _Prompt) -> dict[str, Any]:
    """`Body.stkCallback` exactly as Daraja posts it; metadata only on success."""
    callback: dict[str, Any] = {
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResultCode": prompt.result_code,
        "ResultDesc": prompt.result_desc,
    }
    if prompt.result_code == 0 and prompt.answered_at is not None:
        answered = prompt.answered_at.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")
        callback["CallbackMetadata"] = {
            "Item": [
                # Amount as a decimal number; Balance with no Value, as older samples show.
                {"Name": "Amount", "Value": float(prompt.amount)},
                {"Name": "MpesaReceiptNumber", "Value": prompt.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(answered)},
                {"Name": "PhoneNumber", "Value": int(prompt.phone)},
            ]
        }
    return {"Body": {"stkCallback": callback}}


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _invalid("JSON") from None
    if not isinstance(body, dict):
        raise _invalid("JSON")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    """A required value; Daraja takes "Numeric" fields as numbers or strings alike."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise _invalid(name)
    return str(value).strip()


def _matching(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = _field(body, name)
    if not pattern.fullmatch(value):
        raise _invalid(name)
    return value


def _msisdn(body: dict[str, Any], name: str) -> str:
    """12 digits, 2547… or 2541… (newer Safaricom numbers: SmoDav/mpesa#49)."""
    return _matching(body, name, _MSISDN)


def _bounded(body: dict[str, Any], name: str, limit: int, called: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _invalid(called)
    return value


def _amount(value: Any) -> int:
    """Whole shillings from 1 up (reference §0.7), as a number or a string of digits."""
    if isinstance(value, bool):
        raise _invalid("Amount")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_AMOUNT:
        raise _invalid("Amount")
    return value


def _callback_url(value: Any) -> str:
    if not isinstance(value, str) or re.search(r"\s", value):
        raise _invalid("CallBackURL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("CallBackURL")
    return value


def _basic_credentials(header: str | None) -> tuple[bytes, bytes]:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        raise _error(400, "400.008.01", "Invalid authentication type passed")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _error(400, "400.008.01", "Invalid authentication type passed") from None
    key, colon, secret = decoded.partition(b":")
    if not colon:
        raise _error(400, "400.008.01", "Invalid authentication type passed")
    return key, secret


def _request_id() -> str:
    # Shaped like the documented sample "1c5b-4ba8-815c-ac45c57a3db01495926".
    return f"{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-" + (
        secrets.token_hex(6) + str(secrets.randbelow(10**7)).zfill(7)
    )


def _merchant_request_id() -> str:
    # Shaped like "29115-34620561-1".
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(10**8):08d}-1"
