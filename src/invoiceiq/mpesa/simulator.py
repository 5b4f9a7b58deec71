"""The Daraja side of the simulator (DESIGN §8): OAuth, STK push and STK Query, in memory.

It follows Daraja's documented rules and error shapes (reference/daraja-mpesa.md; the official
pages are https://developer.safaricom.co.ke/apis/{Authorization,MpesaExpressSimulate,
MpesaExpressQuery}) so the app's real client can be tested against it over HTTP. Where Daraja is
not documented, the choice is written down next to the code. Deliberate differences: loopback
and plain-http CallBackURLs are accepted (real Daraja wants public HTTPS), and the gateway
faults (`faults.daraja`) apply to the push and the query, not to the token request. The field
checks are in `simulator_checks`, the prompts and their callbacks in `simulator_prompts`.

State lives in memory and changes only under a lock that is never held across an `await`, so
concurrent requests (and the control API) see consistent prompts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import secrets
import string
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from invoiceiq.kit.clock import NAIROBI, utcnow
from invoiceiq.mpesa import simulator_checks as checks
from invoiceiq.mpesa.simulator_prompts import PromptBook
from invoiceiq.simulator.config import PromptAction, SimulatorSettings

PAYBILL: Final = "CustomerPayBillOnline"
BUY_GOODS: Final = "CustomerBuyGoodsOnline"

# Daraja documents no tolerance for the Timestamp; a few minutes catches a UTC clock (3 h off).
TIMESTAMP_SKEW: Final = timedelta(minutes=5)

_INVALID_TOKEN: Final = "404.001.03"  # noqa: S105 - an error code, not a secret
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits


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
        till = party_b is not None and party_b != shortcode
        self._token_ttl_s = token_ttl_s
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None
        self._prompts = PromptBook(
            settings,
            http=http,
            lock=self._lock,
            transaction_type=BUY_GOODS if till else PAYBILL,
            party_b=party_b if till and party_b else shortcode,
        )
        self._release_holds = asyncio.Event()
        self.router = self._build_router()

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
        return self._prompts.views(phone=phone, state=state)

    async def answer(
        self, checkout_request_id: str, action: PromptAction, delay_ms: int = 0
    ) -> dict[str, Any]:
        """Answer an open prompt as its customer; its callback follows after `delay_ms`.

        KeyError: no such prompt. ValueError: already answered (or an unknown action).
        """
        return self._prompts.answer(checkout_request_id, action, delay_ms)

    def reset(self) -> None:
        """Forget tokens, prompts and history; stop pending answers and callbacks."""
        self._prompts.cancel_tasks()
        self._release_holds.set()
        self._release_holds = asyncio.Event()
        with self._lock:
            self._token = None
            self._prompts.forget()

    async def aclose(self) -> None:
        """Stop timers and callbacks, and answer held requests now. `http` is the caller's."""
        self._release_holds.set()
        tasks = self._prompts.cancel_tasks()
        await asyncio.gather(*tasks, return_exceptions=True)

    # OAuth: https://developer.safaricom.co.ke/apis/Authorization

    async def _generate_token(self, request: Request) -> Response:
        try:
            if request.query_params.get("grant_type") != "client_credentials":
                raise checks.error(400, "400.008.02", "Invalid grant type passed")
            key, secret = checks.basic_credentials(request.headers.get("authorization"))
            known_key, known_secret = self._credentials
            # Both compared, whatever the first gives, so timing does not tell which was wrong.
            matches = hmac.compare_digest(key, known_key) & hmac.compare_digest(
                secret, known_secret
            )
            if not matches:
                # A wrong key or secret: 400 with an empty body (Byte-Barn/mpesakit
                # `mpesakit/auth/token_manager.py`).
                raise checks.Refusal(400, None)
        except checks.Refusal as refusal:
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
            push = self._validate_push(await checks.json_body(request))
            prompt = self._prompts.open(push)
            response: Response = JSONResponse(
                {
                    "MerchantRequestID": prompt.merchant_request_id,
                    "CheckoutRequestID": prompt.checkout_request_id,
                    "ResponseCode": "0",
                    "ResponseDescription": "Success. Request accepted for processing",
                    "CustomerMessage": "Success. Request accepted for processing",
                }
            )
        except checks.Refusal as refusal:
            response = refusal.response()
        if hold:
            await self._hold()
        return response

    def _validate_push(self, body: dict[str, Any]) -> checks.Push:
        shortcode, timestamp, password = self._credential_fields(body)
        transaction_type = checks.field(body, "TransactionType")
        if transaction_type not in (PAYBILL, BUY_GOODS):
            raise checks.invalid("TransactionType")
        push = checks.Push(
            phone=checks.msisdn(body, "PhoneNumber"),
            amount=checks.amount(body.get("Amount")),
            account_reference=checks.bounded(body, "AccountReference", 12, "AccountReference"),
            callback_url=checks.callback_url(body.get("CallBackURL")),
            transaction_type=transaction_type,
            party_b=checks.matching(body, "PartyB", checks.SHORTCODE),
        )
        checks.msisdn(body, "PartyA")
        # Optional in the current docs, but a null or empty one gets "Invalid Remarks"
        # (https://github.com/navariltd/frappe-mpsa-payments/pull/123).
        if "TransactionDesc" in body:
            checks.bounded(body, "TransactionDesc", 13, "Remarks")
        self._check_credentials(shortcode, timestamp, password)
        return push

    # STK Query: https://developer.safaricom.co.ke/apis/MpesaExpressQuery

    async def _query(self, request: Request) -> Response:
        fault, _ = self._gateway_faults(may_time_out=False)
        try:
            if fault:
                raise fault
            self._authorise(request)
            body = await checks.json_body(request)
            self._check_credentials(*self._credential_fields(body))
            checkout_request_id = checks.field(body, "CheckoutRequestID")
            prompt, answered = self._prompts.find(checkout_request_id)
            if prompt is None:
                raise checks.invalid("CheckoutRequestID")
            if not answered:
                # The standard answer while the customer has not acted (reference §4).
                raise checks.error(
                    500, checks.GENERIC, "The transaction is being processed", checkout_request_id
                )
        except checks.Refusal as refusal:
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

    def _gateway_faults(self, *, may_time_out: bool) -> tuple[checks.Refusal | None, bool]:
        """Seeded faults, rolled in a fixed order so a seed repeats the same run."""
        faults = self._settings.config.faults.daraja
        dice = self._settings.dice
        if dice.roll(faults.spike_arrest):
            return checks.spike_arrest(), False
        if dice.roll(faults.error_5xx):
            return checks.error(500, "500.003.1001", "Internal Server Error"), False
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
            raise checks.error(404, _INVALID_TOKEN, "Invalid Access Token")
        # Without a JSON content type Daraja misreads the body (MpesaExpressSimulate, FAQ 9).
        if "application/json" not in request.headers.get("content-type", "").lower():
            raise checks.invalid("BusinessShortCode")

    def _credential_fields(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        shortcode = checks.matching(body, "BusinessShortCode", checks.SHORTCODE)
        timestamp = checks.matching(body, "Timestamp", checks.TIMESTAMP)
        try:
            sent_at = datetime.strptime(timestamp, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
        except ValueError:
            raise checks.invalid("Timestamp") from None
        if abs(utcnow() - sent_at) > TIMESTAMP_SKEW:
            raise checks.invalid("Timestamp")
        password = body.get("Password")
        return shortcode, timestamp, password if isinstance(password, str) else None

    def _check_credentials(self, shortcode: str, timestamp: str, password: str | None) -> None:
        if shortcode != self._shortcode:
            raise checks.error(500, checks.GENERIC, "Merchant does not exist")
        expected = base64.b64encode(f"{shortcode}{self._passkey}{timestamp}".encode())
        if password is None or not hmac.compare_digest(password.encode(), expected):
            raise checks.error(500, checks.GENERIC, "Wrong credentials")

    async def _hold(self) -> None:
        """A simulated timeout: the answer comes only after the client has given up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release_holds.wait(), self._settings.config.timeout_hold_s)
