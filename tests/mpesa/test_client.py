"""The Daraja client over real HTTP: against the simulator's fake, and against recorded samples.

The fake's router runs in a FastAPI app under uvicorn on a loopback port; callbacks go to a
second server that records them. Nothing of our own code or of httpx is patched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import exc as sa_exc

from invoiceiq.config import SANDBOX_PASSKEY
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.mpesa.client import (
    AccessToken,
    DarajaClient,
    StkPushAccepted,
    TransactionType,
    clean_account_reference,
    clean_transaction_desc,
    daraja_timestamp,
    stk_password,
)
from invoiceiq.mpesa.errors import DarajaError
from invoiceiq.mpesa.schemas import StkCallback, parse_callback
from invoiceiq.mpesa.simulator import DarajaFake
from invoiceiq.mpesa.token_store import MemoryTokenStore
from invoiceiq.simulator.config import DarajaFaults, Faults, SimulatorConfig, SimulatorSettings
from support.servers import Recorder, closed_port_url, serve_app

KEY, SECRET, SHORTCODE, TILL = "test-key", "test-secret", "174379", "5432100"
PHONE = "254712345678"
CONTRACTS = Path(__file__).parents[1] / "contracts" / "mpesa"


@dataclass
class Daraja:
    """The fake behind a real server, and a recorder for the callbacks it posts."""

    fake: DarajaFake
    settings: SimulatorSettings
    base_url: str
    callbacks: Recorder
    callback_url: str

    async def callback(self, index: int = 0, *, timeout: float = 5.0) -> StkCallback:
        received = await self.callbacks.wait_for(lambda r: len(r) > index, timeout=timeout)
        return parse_callback(received[index].json())


@asynccontextmanager
async def running_daraja(
    config: SimulatorConfig | None = None, *, party_b: str | None = None, token_ttl_s: int = 3599
) -> AsyncIterator[Daraja]:
    settings = SimulatorSettings(config)
    http = make_http_client(Timeouts(connect=2, read=5, write=5, pool=2))
    fake = DarajaFake(
        settings,
        consumer_key=KEY,
        consumer_secret=SECRET,
        shortcode=SHORTCODE,
        passkey=SANDBOX_PASSKEY,
        http=http,
        party_b=party_b,
        token_ttl_s=token_ttl_s,
    )
    recorder = Recorder()
    # One server for the fake and the callback receiver, as in `make run`, where the simulator
    # posts callbacks to the app it is mounted in.
    app = FastAPI()
    app.include_router(fake.router, prefix="/simulator/daraja")
    app.mount("/receiver", recorder.app())
    try:
        async with serve_app(app) as base:
            try:
                yield Daraja(
                    fake, settings, f"{base}/simulator/daraja", recorder, f"{base}/receiver/cb"
                )
            finally:
                await fake.aclose()
    finally:
        await http.aclose()


@pytest.fixture
async def daraja() -> AsyncIterator[Daraja]:
    async with running_daraja() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(Timeouts(connect=1, read=3, write=3, pool=1))
    yield client
    await client.aclose()


class CountingStore(MemoryTokenStore):
    """A memory store that counts the token requests it lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches = 0

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]]) -> str:
        async def counted() -> AccessToken:
            self.fetches += 1
            return await fetch()

        return await super().get(counted)


def client_for(
    base_url: str,
    http: httpx.AsyncClient,
    *,
    tokens: Any = None,
    passkey: str = SANDBOX_PASSKEY,
    transaction_type: TransactionType = "CustomerPayBillOnline",
    party_b: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> DarajaClient:
    return DarajaClient(
        base_url=base_url,
        consumer_key=KEY,
        consumer_secret=SECRET,
        shortcode=SHORTCODE,
        passkey=passkey,
        transaction_type=transaction_type,
        party_b=party_b,
        http=http,
        tokens=tokens if tokens is not None else MemoryTokenStore(),
        clock=clock,
    )


async def push(
    client: DarajaClient, daraja: Daraja, phone: str = PHONE, amount: int = 1500, **extra: str
) -> StkPushAccepted:
    return await client.stk_push(
        phone=phone,
        amount=amount,
        account_reference=extra.get("account_reference", "INV7K3QX9A"),
        description=extra.get("description", "Invoice INV7K3QX9A"),
        callback_url=daraja.callback_url,
    )


async def test_a_push_accepted_then_paid(daraja: Daraja, http: httpx.AsyncClient) -> None:
    client = client_for(daraja.base_url, http)
    accepted = await push(client, daraja)
    assert accepted.response_code == "0" and accepted.customer_message
    # The audit copy of the request never holds the password, nor the callback path secret.
    assert "Password" not in accepted.request_body
    secret = daraja.callback_url.rsplit("/", 1)[1]
    assert secret not in str(accepted.request_body)
    assert accepted.request_body["CallBackURL"] == daraja.callback_url.rsplit("/", 1)[0] + "/•••"
    assert accepted.request_body["BusinessShortCode"] == SHORTCODE
    assert accepted.request_body["PartyB"] == SHORTCODE  # a PayBill credits its own shortcode
    assert accepted.request_body["PartyA"] == accepted.request_body["PhoneNumber"] == PHONE
    assert accepted.request_body["Amount"] == 1500
    assert accepted.request_body["TransactionDesc"] == "InvoiceINV7K3"

    assert (await client.stk_query(accepted.checkout_request_id)).state == "pending"
    await daraja.fake.answer(accepted.checkout_request_id, "accept")
    callback = await daraja.callback()
    assert callback.succeeded and callback.amount == 1500 and callback.phone == PHONE
    assert callback.checkout_request_id == accepted.checkout_request_id
    assert callback.merchant_request_id == accepted.merchant_request_id
    result = await client.stk_query(accepted.checkout_request_id)
    assert (result.state, result.result_code) == ("success", "0")


@pytest.mark.parametrize(
    ("action", "code"),
    [("cancel", "1032"), ("timeout", "1037"), ("wrong_pin", "2001"), ("insufficient_funds", "1")],
)
async def test_a_push_that_fails(
    daraja: Daraja, http: httpx.AsyncClient, action: Any, code: str
) -> None:
    client = client_for(daraja.base_url, http)
    accepted = await push(client, daraja)
    await daraja.fake.answer(accepted.checkout_request_id, action)
    callback = await daraja.callback()
    assert (callback.succeeded, callback.result_code, callback.amount) == (False, code, None)
    result = await client.stk_query(accepted.checkout_request_id)
    assert (result.state, result.result_code) == ("failed", code)


async def test_an_unanswered_prompt_times_out_with_1037(http: httpx.AsyncClient) -> None:
    async with running_daraja(SimulatorConfig(prompt_timeout_s=0.2)) as daraja:
        client = client_for(daraja.base_url, http)
        accepted = await push(client, daraja)
        callback = await daraja.callback()
        assert callback.checkout_request_id == accepted.checkout_request_id
        assert callback.result_code == "1037"
        assert (await client.stk_query(accepted.checkout_request_id)).state == "failed"


async def test_a_wrong_passkey_is_rejected_not_retried(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    client = client_for(daraja.base_url, http, passkey="not-the-passkey")
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja)
    error = caught.value
    assert (error.kind, error.error_code, error.http_status) == ("rejected", "500.001.1001", 500)
    assert error.provider_message == "Wrong credentials"
    assert "Wrong credentials" not in error.message
    assert error.request_body is not None and "Password" not in error.request_body
    with pytest.raises(DarajaError, match="password"):
        await client.stk_query("ws_CO_anything")
    assert daraja.fake.prompts() == []


async def test_a_number_daraja_refuses_is_rejected(daraja: Daraja, http: httpx.AsyncClient) -> None:
    client = client_for(daraja.base_url, http)
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja, phone="254201234567")  # a Nairobi landline
    error = caught.value
    assert (error.kind, error.error_code, error.http_status) == ("rejected", "400.002.02", 400)
    assert error.invalid_field == "PhoneNumber"


@pytest.mark.parametrize("phone", ["0712345678", "+254712345678", "25471234567", "2547123456789"])
async def test_a_phone_not_in_wire_format_is_refused_before_sending(
    daraja: Daraja, http: httpx.AsyncClient, phone: str
) -> None:
    client = client_for(daraja.base_url, http)
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja, phone=phone)
    assert (caught.value.kind, caught.value.http_status) == ("rejected", None)
    assert daraja.fake.prompts() == []


async def test_an_open_prompt_makes_the_phone_busy(daraja: Daraja, http: httpx.AsyncClient) -> None:
    client = client_for(daraja.base_url, http)
    await push(client, daraja, amount=100)
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja, amount=200)
    assert (caught.value.kind, caught.value.error_code) == ("busy", "500.001.1001")
    assert not caught.value.pending
    assert len(daraja.fake.prompts(phone=PHONE, state="open")) == 1


async def test_same_phone_and_amount_within_two_minutes_ends_in_17(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    client = client_for(daraja.base_url, http)
    first = await push(client, daraja, amount=700)
    await daraja.fake.answer(first.checkout_request_id, "cancel")
    # Accepted for processing, like Daraja does; the outcome comes by callback.
    second = await push(client, daraja, amount=700)
    callbacks = [await daraja.callback(0), await daraja.callback(1)]
    by_id = {callback.checkout_request_id: callback.result_code for callback in callbacks}
    assert by_id == {first.checkout_request_id: "1032", second.checkout_request_id: "17"}
    # Another amount is a different request.
    await push(client, daraja, amount=701)
    assert len(daraja.fake.prompts(phone=PHONE, state="open")) == 1


@pytest.mark.parametrize(
    ("faults", "status", "push_kind"),
    [
        (DarajaFaults(spike_arrest=1.0), 429, "transient"),
        # A server failure may come after the prompt went up: the push is never repeated.
        (DarajaFaults(error_5xx=1.0), 500, "ambiguous"),
    ],
)
async def test_gateway_faults_are_transient_but_a_server_failure_of_a_push_is_ambiguous(
    daraja: Daraja, http: httpx.AsyncClient, faults: DarajaFaults, status: int, push_kind: str
) -> None:
    daraja.settings.update(SimulatorConfig(faults=Faults(daraja=faults)))
    client = client_for(daraja.base_url, http)
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja)
    assert (caught.value.kind, caught.value.http_status) == (push_kind, status)
    with pytest.raises(DarajaError) as caught:
        await client.stk_query("ws_CO_1")
    assert caught.value.kind == "transient"
    assert daraja.fake.prompts() == []


async def test_a_timeout_after_sending_is_ambiguous_and_the_prompt_is_up() -> None:
    config = SimulatorConfig(
        faults=Faults(daraja=DarajaFaults(timeout_after=1.0)), timeout_hold_s=1.0
    )
    async with running_daraja(config) as daraja:
        short = make_http_client(Timeouts(connect=1, read=0.2, write=1, pool=1))
        try:
            client = client_for(daraja.base_url, short)
            with pytest.raises(DarajaError) as caught:
                await push(client, daraja)
            error = caught.value
            assert error.kind == "ambiguous" and error.request_body is not None
            # The push went through: the prompt is on the phone and its callback will come.
            [prompt] = daraja.fake.prompts(phone=PHONE, state="open")
            await daraja.fake.answer(prompt["checkout_request_id"], "accept")
            assert (await daraja.callback()).succeeded
        finally:
            await short.aclose()


async def test_a_refused_connection_is_transient(http: httpx.AsyncClient) -> None:
    client = client_for(closed_port_url(), http)
    with pytest.raises(DarajaError) as caught:
        await client.stk_push(
            phone=PHONE,
            amount=1,
            account_reference="INV1",
            description="x",
            callback_url="https://example.com/cb",
        )
    assert caught.value.kind == "transient" and caught.value.http_status is None


async def test_a_token_superseded_elsewhere_is_refreshed_once(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    tokens = CountingStore()
    client = client_for(daraja.base_url, http, tokens=tokens)
    await push(client, daraja, phone="254712000001")
    assert tokens.fetches == 1
    # Someone else (another process with its own cache) asks for a token: ours dies.
    other = await http.get(
        f"{daraja.base_url}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(KEY, SECRET),
    )
    assert other.status_code == 200
    await push(client, daraja, phone="254712000002")
    assert tokens.fetches == 2
    await push(client, daraja, phone="254712000003")
    assert tokens.fetches == 2
    assert len(daraja.fake.prompts()) == 3


class DeadTokenStore:
    """Hands out a token Daraja never issued, however often it is told it is invalid."""

    def __init__(self) -> None:
        self.invalidated: list[str] = []

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]]) -> str:
        return "never-issued"

    async def invalidate(self, token: str) -> None:
        self.invalidated.append(token)


async def test_a_token_refused_twice_is_not_retried_again(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    tokens = DeadTokenStore()
    client = client_for(daraja.base_url, http, tokens=tokens)
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja)
    assert (caught.value.kind, caught.value.error_code) == ("rejected", "404.001.03")
    assert caught.value.token_refused
    assert tokens.invalidated == ["never-issued"]
    assert daraja.fake.prompts() == []


async def test_a_query_still_being_processed_is_no_warning(
    daraja: Daraja, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The usual answer while the customer decides: the reconciler asks it again and again."""
    client = client_for(daraja.base_url, http)
    accepted = await push(client, daraja)
    with caplog.at_level(logging.INFO, logger="invoiceiq.mpesa.client"):
        assert (await client.stk_query(accepted.checkout_request_id)).state == "pending"
    [record] = [r for r in caplog.records if r.getMessage() == "daraja call failed"]
    assert record.levelno == logging.INFO


class BrokenTokenStore:
    """The token store's database fails (locked, unreachable)."""

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]]) -> str:
        raise sa_exc.OperationalError("SELECT token", {}, Exception("database is locked"))

    async def invalidate(self, token: str) -> None:
        raise AssertionError("nothing to invalidate")


async def test_a_token_store_failure_is_transient_and_nothing_is_sent(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    """Transient, so the push job clears "push sent at" and pushes later: the prompt it never
    sent is not left for the reconciler as if it had gone out."""
    client = client_for(daraja.base_url, http, tokens=BrokenTokenStore())
    with pytest.raises(DarajaError) as caught:
        await push(client, daraja)
    assert caught.value.kind == "transient" and "database is locked" not in caught.value.message
    assert daraja.fake.prompts() == []


async def test_wrong_consumer_secret(daraja: Daraja, http: httpx.AsyncClient) -> None:
    client = DarajaClient(
        base_url=daraja.base_url,
        consumer_key=KEY,
        consumer_secret="wrong",
        shortcode=SHORTCODE,
        passkey=SANDBOX_PASSKEY,
        transaction_type="CustomerPayBillOnline",
        party_b=None,
        http=http,
        tokens=MemoryTokenStore(),
    )
    with pytest.raises(DarajaError, match="consumer key or secret") as caught:
        await push(client, daraja)
    assert (caught.value.kind, caught.value.http_status) == ("rejected", 400)


async def test_a_till_is_credited_through_party_b(http: httpx.AsyncClient) -> None:
    async with running_daraja(party_b=TILL) as daraja:
        client = client_for(
            daraja.base_url, http, transaction_type="CustomerBuyGoodsOnline", party_b=TILL
        )
        accepted = await push(client, daraja)
        body = accepted.request_body
        assert (body["BusinessShortCode"], body["PartyB"]) == (SHORTCODE, TILL)
        assert body["TransactionType"] == "CustomerBuyGoodsOnline"
        await daraja.fake.answer(accepted.checkout_request_id, "accept")
        assert (await daraja.callback()).succeeded

        # The PayBill form against a till: accepted, then refused by M-PESA (2028).
        paybill = client_for(daraja.base_url, http)
        wrong = await push(paybill, daraja, phone="254712000009")
        assert wrong.request_body["PartyB"] == SHORTCODE
        callback = await daraja.callback(1)
        assert (callback.checkout_request_id, callback.result_code) == (
            wrong.checkout_request_id,
            "2028",
        )


def test_a_till_client_needs_the_till_number(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="party_b"):
        client_for("http://x", http, transaction_type="CustomerBuyGoodsOnline")


async def test_the_timestamp_is_nairobi_time_and_signs_the_password(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    frozen = utcnow().replace(microsecond=0)
    client = client_for(daraja.base_url, http, clock=lambda: frozen)
    accepted = await push(client, daraja)
    assert accepted.request_body["Timestamp"] == (frozen + timedelta(hours=3)).strftime(
        "%Y%m%d%H%M%S"
    )
    # The fake accepted it, so the Password was base64(shortcode + passkey + that timestamp).
    assert daraja.fake.prompts(phone=PHONE)[0]["checkout_request_id"] == (
        accepted.checkout_request_id
    )


def test_the_password_matches_the_documented_sandbox_sample() -> None:
    # The official sample's Timestamp 20160216165627 with shortcode 174379 and its passkey.
    password = stk_password("174379", SANDBOX_PASSKEY, "20160216165627")
    assert base64.b64decode(password).decode() == f"174379{SANDBOX_PASSKEY}20160216165627"
    assert password.startswith("MTc0Mzc5YmZi")


def test_the_timestamp_is_converted_from_any_zone_and_refuses_naive_times() -> None:
    moment = datetime(2025, 3, 14, 21, 30, 5, tzinfo=UTC)
    assert daraja_timestamp(moment) == "20250315003005"
    with pytest.raises(ValueError, match="aware"):
        daraja_timestamp(datetime(2025, 3, 14, 21, 30, 5))


@pytest.mark.parametrize(
    ("given", "sent"),
    [("INV7K3QX9A", "INV7K3QX9A"), ("INV-7K3Q X9A", "INV7K3QX9A"), ("Ref@#&12", "Ref12")],
)
def test_account_reference_keeps_letters_and_digits(given: str, sent: str) -> None:
    assert clean_account_reference(given) == sent


@pytest.mark.parametrize("given", ["", "---", "ABCDEFGHIJKLM", "INV 1234567890"])
def test_an_account_reference_that_cannot_fit_is_refused(given: str) -> None:
    with pytest.raises(DarajaError) as caught:
        clean_account_reference(given)
    assert (caught.value.kind, caught.value.invalid_field) == ("rejected", "AccountReference")


def test_transaction_desc_is_cut_to_13_and_never_empty() -> None:
    assert clean_transaction_desc("Logo design & print, 2 pages") == "Logodesignpri"
    with pytest.raises(DarajaError):
        clean_transaction_desc(" & ! ")


async def test_limits_are_checked_before_anything_is_sent(
    daraja: Daraja, http: httpx.AsyncClient
) -> None:
    client = client_for(daraja.base_url, http)
    with pytest.raises(DarajaError, match="AccountReference"):
        await push(client, daraja, account_reference="INV1234567890")
    with pytest.raises(DarajaError, match="TransactionDesc"):
        await push(client, daraja, description="!!")
    for amount in (0, -5):
        with pytest.raises(DarajaError, match="Amount"):
            await push(client, daraja, amount=amount)
    with pytest.raises(DarajaError, match="CallBackURL"):
        await client.stk_push(
            phone=PHONE,
            amount=1,
            account_reference="A",
            description="B",
            callback_url="https://example.com/a b",
        )
    assert daraja.fake.prompts() == []


# The client against recorded Daraja answers, served byte for byte.


def sample(name: str) -> tuple[int, bytes]:
    data = json.loads((CONTRACTS / name).read_text())
    body = data["body"]
    return data["http_status"], body.encode() if isinstance(body, str) else json.dumps(
        body
    ).encode()


@asynccontextmanager
async def replaying(status: int, content: bytes) -> AsyncIterator[str]:
    """A Daraja that issues tokens and answers every push and query with one recorded body."""
    app = FastAPI()
    token_status, token_body = sample("response_token_string_expiry.json")

    @app.get("/oauth/v1/generate")
    async def token() -> Response:
        return Response(token_body, token_status, media_type="application/json")

    @app.post("/mpesa/{path:path}")
    async def answer(request: Request) -> Response:
        kind = "text/html" if content.startswith(b"<") else "application/json"
        return Response(content, status, media_type=kind if content else None)

    async with serve_app(app) as base:
        yield base


# As answers to a push. A server failure (500.003.1001, a 503 page) may come after the prompt
# went up: ambiguous, never pushed again; throttling is surely harmless to retry: transient.
CLIENT_KINDS = {
    "error_being_processed.json": "busy",
    "error_empty.json": "rejected",
    "error_html.json": "ambiguous",
    "error_internal.json": "ambiguous",
    "error_invalid_access_token.json": "rejected",
    "error_invalid_grant.json": "rejected",
    "error_invalid_phone.json": "rejected",
    "error_invalid_remarks.json": "rejected",
    "error_merchant_does_not_exist.json": "rejected",
    "error_spike_arrest_apigee.json": "transient",
    "error_spike_arrest_daraja.json": "transient",
    "error_unable_to_lock.json": "busy",
    "error_wrong_credentials.json": "rejected",
}


def test_every_error_sample_is_replayed() -> None:
    assert {p.name for p in CONTRACTS.glob("error_*.json")} == set(CLIENT_KINDS)


@pytest.mark.parametrize("name", sorted(CLIENT_KINDS))
async def test_the_client_classifies_recorded_errors(name: str, http: httpx.AsyncClient) -> None:
    async with replaying(*sample(name)) as base:
        client = client_for(base, http)
        with pytest.raises(DarajaError) as caught:
            await client.stk_push(
                phone=PHONE,
                amount=1,
                account_reference="INV1",
                description="Test",
                callback_url="https://example.com/cb",
            )
    assert caught.value.kind == CLIENT_KINDS[name]


@pytest.mark.parametrize(
    ("name", "state", "code"),
    [
        ("response_stk_query_success.json", "success", "0"),
        ("response_stk_query_failed.json", "failed", "1032"),
        ("response_stk_query_failed_1037.json", "failed", "1037"),
        ("response_stk_query_pending.json", "pending", None),
    ],
)
async def test_the_client_reads_recorded_query_answers(
    name: str, state: str, code: str | None, http: httpx.AsyncClient
) -> None:
    async with replaying(*sample(name)) as base:
        result = await client_for(base, http).stk_query("ws_CO_13012021093521236557")
    assert (result.state, result.result_code) == (state, code)


@pytest.mark.parametrize(
    ("code", "state"), [(0.0, "success"), ("0", "success"), (1032.0, "failed")]
)
async def test_a_query_result_code_with_a_fraction_reads_as_the_code(
    code: Any, state: str, http: httpx.AsyncClient
) -> None:
    status, content = sample("response_stk_query_success.json")
    body = json.loads(content) | {"ResultCode": code}
    async with replaying(status, json.dumps(body).encode()) as base:
        result = await client_for(base, http).stk_query("ws_CO_13012021093521236557")
    assert result.state == state and result.result_code == str(int(float(code)))


async def test_the_client_reads_a_recorded_accepted_push(http: httpx.AsyncClient) -> None:
    async with replaying(*sample("response_stk_push_accepted.json")) as base:
        accepted = await client_for(base, http).stk_push(
            phone=PHONE,
            amount=1,
            account_reference="INV1",
            description="Test",
            callback_url="https://example.com/cb",
        )
    assert accepted.checkout_request_id == "ws_CO_1007202409152617172396192"
    assert accepted.merchant_request_id == "2654-4b64-97ff-b827b542881d3130"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("error_html.json", "transient"),
        ("error_internal.json", "transient"),
        ("error_spike_arrest_daraja.json", "transient"),
    ],
)
async def test_a_query_that_fails_is_only_asked_again(
    name: str, kind: str, http: httpx.AsyncClient
) -> None:
    """A query changes nothing at M-PESA: any server failure is worth asking again."""
    async with replaying(*sample(name)) as base:
        with pytest.raises(DarajaError) as caught:
            await client_for(base, http).stk_query("ws_CO_1")
    assert caught.value.kind == kind


async def test_an_unreadable_success_is_ambiguous_for_a_push_only(
    http: httpx.AsyncClient,
) -> None:
    async with replaying(200, b"<html>OK</html>") as base:
        client = client_for(base, http)
        with pytest.raises(DarajaError) as pushed:
            await client.stk_push(
                phone=PHONE,
                amount=1,
                account_reference="INV1",
                description="Test",
                callback_url="https://example.com/cb",
            )
        with pytest.raises(DarajaError) as queried:
            await client.stk_query("ws_CO_1")
    assert (pushed.value.kind, queried.value.kind) == ("ambiguous", "transient")


async def test_concurrent_calls_share_one_token(daraja: Daraja, http: httpx.AsyncClient) -> None:
    tokens = CountingStore()
    client = client_for(daraja.base_url, http, tokens=tokens)
    phones = [f"2547120000{n:02d}" for n in range(10)]
    await asyncio.gather(*(push(client, daraja, phone=phone) for phone in phones))
    assert tokens.fetches == 1
    assert len(daraja.fake.prompts(state="open")) == 10
