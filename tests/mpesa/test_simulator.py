"""The Daraja fake over HTTP with a plain httpx client: Daraja's rules, shapes, prompts and faults.

Raw requests here (not our client), so every rule can be broken on purpose; the fake's callbacks
are checked against the contract samples, so the fake cannot drift from what Daraja sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from invoiceiq.config import SANDBOX_PASSKEY
from invoiceiq.kit.clock import NAIROBI, utcnow
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.mpesa.schemas import parse_callback
from invoiceiq.mpesa.simulator import DarajaFake
from invoiceiq.simulator.config import (
    AutoAnswer,
    CallbackFaults,
    DarajaFaults,
    Faults,
    SimulatorConfig,
    SimulatorSettings,
)
from support.servers import Recorder, serve_app

KEY, SECRET, SHORTCODE, TILL = "sim-key", "sim-secret", "174379", "5432100"
PHONE = "254712345678"
CONTRACTS = Path(__file__).parents[1] / "contracts" / "mpesa"
PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"
QUIET = 0.3  # seconds to wait for something that must NOT arrive


@dataclass
class Sim:
    fake: DarajaFake
    settings: SimulatorSettings
    http: httpx.AsyncClient
    base_url: str
    callbacks: Recorder
    callback_url: str
    token: str = ""

    async def new_token(self) -> str:
        response = await self.http.get(
            f"{self.base_url}/oauth/v1/generate",
            params={"grant_type": "client_credentials"},
            auth=(KEY, SECRET),
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return self.token

    async def post(
        self, path: str, body: Any, *, token: str | None = None, **headers: str
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        return await self.http.post(
            f"{self.base_url}{path}",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **auth, **headers},
        )

    async def push(self, **changes: Any) -> httpx.Response:
        return await self.post(PUSH_PATH, push_body(self, **changes))

    async def query(self, checkout_request_id: str, **changes: Any) -> httpx.Response:
        body = credentials() | {"CheckoutRequestID": checkout_request_id} | changes
        return await self.post(QUERY_PATH, body)


def credentials(moment: datetime | None = None, passkey: str = SANDBOX_PASSKEY) -> dict[str, str]:
    timestamp = (moment or utcnow()).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")
    password = base64.b64encode(f"{SHORTCODE}{passkey}{timestamp}".encode()).decode()
    return {"BusinessShortCode": SHORTCODE, "Password": password, "Timestamp": timestamp}


def push_body(sim: Sim, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = credentials() | {
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "1",
        "PartyA": PHONE,
        "PartyB": SHORTCODE,
        "PhoneNumber": PHONE,
        "CallBackURL": sim.callback_url,
        "AccountReference": "INV7K3QX9A",
        "TransactionDesc": "Payment",
    }
    for name, value in changes.items():
        if value is _DROP:
            body.pop(name)
        else:
            body[name] = value
    return body


_DROP = object()


@asynccontextmanager
async def running(config: SimulatorConfig | None = None, **options: Any) -> AsyncIterator[Sim]:
    settings = SimulatorSettings(config)
    http = make_http_client(Timeouts(connect=1, read=5, write=5, pool=1))
    fake = DarajaFake(
        settings,
        consumer_key=KEY,
        consumer_secret=SECRET,
        shortcode=SHORTCODE,
        passkey=SANDBOX_PASSKEY,
        http=http,
        **options,
    )
    recorder = Recorder()
    # One server for the fake and the callback receiver, as in `make run`, where the simulator
    # posts callbacks to the app it is mounted in.
    app = FastAPI()
    app.include_router(fake.router, prefix="/simulator/daraja")
    app.mount("/receiver", recorder.app())
    try:
        async with serve_app(app) as base:
            sim = Sim(
                fake, settings, http, f"{base}/simulator/daraja", recorder, f"{base}/receiver/cb"
            )
            try:
                await sim.new_token()
                yield sim
            finally:
                await fake.aclose()
    finally:
        await http.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with running() as started:
        yield started


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"}
    return response.status_code, body["errorCode"], body["errorMessage"]


async def callbacks(sim: Sim, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    received = await sim.callbacks.wait_for(lambda r: len(r) >= count, timeout=timeout)
    return [item.json() for item in received]


# OAuth


async def test_oauth_checks_basic_auth_and_grant_type(sim: Sim) -> None:
    url = f"{sim.base_url}/oauth/v1/generate"
    good = {"grant_type": "client_credentials"}
    wrong = await sim.http.get(url, params=good, auth=(KEY, "nope"))
    assert (wrong.status_code, wrong.content) == (400, b"")
    no_auth = await sim.http.get(url, params=good)
    assert error_of(no_auth)[:2] == (400, "400.008.01")
    grant = await sim.http.get(url, params={"grant_type": "password"}, auth=(KEY, SECRET))
    assert error_of(grant)[:2] == (400, "400.008.02")
    ok = await sim.http.get(url, params=good, auth=(KEY, SECRET))
    assert ok.json()["expires_in"] == "3599" and len(ok.json()["access_token"]) == 28


async def test_a_new_token_invalidates_the_previous_one(sim: Sim) -> None:
    old = sim.token
    await sim.new_token()
    stale = await sim.post(PUSH_PATH, push_body(sim), token=old)
    assert error_of(stale) == (404, "404.001.03", "Invalid Access Token")
    stale_query = await sim.post(QUERY_PATH, credentials() | {"CheckoutRequestID": "x"}, token=old)
    assert error_of(stale_query)[1] == "404.001.03"
    assert (await sim.push()).status_code == 200


async def test_an_expired_token_is_refused() -> None:
    async with running(token_ttl_s=0) as sim:
        assert error_of(await sim.push())[1] == "404.001.03"


async def test_a_request_without_bearer_or_json_content_type(sim: Sim) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
    assert error_of(await sim.post(PUSH_PATH, push_body(sim), **basic))[1] == "404.001.03"
    response = await sim.post(PUSH_PATH, push_body(sim), **{"Content-Type": "text/plain"})
    assert error_of(response) == (400, "400.002.02", "Bad Request - Invalid BusinessShortCode")


# STK push field rules


def _nairobi_stamp(moment: datetime) -> str:
    return moment.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"BusinessShortCode": _DROP}, "BusinessShortCode"),
    ({"BusinessShortCode": "17a379"}, "BusinessShortCode"),
    ({"Timestamp": "2025-03-14 10:15"}, "Timestamp"),
    ({"Timestamp": "20251399999999"}, "Timestamp"),
    ({"TransactionType": "CustomerPayBill"}, "TransactionType"),
    ({"Amount": 1.5}, "Amount"),
    ({"Amount": 0}, "Amount"),
    ({"Amount": "ten"}, "Amount"),
    ({"Amount": 150_001}, "Amount"),
    ({"Amount": _DROP}, "Amount"),
    ({"PhoneNumber": "254201234567"}, "PhoneNumber"),
    ({"PhoneNumber": "0712345678"}, "PhoneNumber"),
    ({"PhoneNumber": _DROP}, "PhoneNumber"),
    ({"PartyA": "2547123"}, "PartyA"),
    ({"PartyB": _DROP}, "PartyB"),
    ({"CallBackURL": "ftp://example.com/cb"}, "CallBackURL"),
    ({"CallBackURL": "https://example.com/c b"}, "CallBackURL"),
    ({"CallBackURL": None}, "CallBackURL"),
    ({"AccountReference": "ABCDEFGHIJKLM"}, "AccountReference"),
    ({"AccountReference": ""}, "AccountReference"),
    ({"AccountReference": _DROP}, "AccountReference"),
    ({"TransactionDesc": None}, "Remarks"),
    ({"TransactionDesc": ""}, "Remarks"),
    ({"TransactionDesc": "ABCDEFGHIJKLMN"}, "Remarks"),
]


async def test_invalid_fields_get_daraja_400(sim: Sim) -> None:
    # One server for every case: starting one per case would triple the file's run time.
    for changes, field in INVALID:
        response = await sim.push(**changes)
        expected = (400, "400.002.02", f"Bad Request - Invalid {field}")
        assert error_of(response) == expected, changes
    assert sim.fake.prompts() == []


async def test_a_timestamp_far_from_nairobi_now_is_refused(sim: Sim) -> None:
    # -180: a server in UTC formatting its own wall time, the classic bug.
    for minutes in (-180, 180, -6, 6):
        moment = utcnow() + timedelta(minutes=minutes)
        response = await sim.push(**credentials(moment))
        assert error_of(response)[2] == "Bad Request - Invalid Timestamp", minutes
    assert (await sim.push(**credentials(utcnow() - timedelta(minutes=4)))).status_code == 200


async def test_numbers_may_be_sent_as_numbers(sim: Sim) -> None:
    response = await sim.push(Amount=10, PartyA=int(PHONE), PhoneNumber=int(PHONE))
    assert response.status_code == 200
    assert sim.fake.prompts()[0]["amount"] == 10


async def test_transaction_desc_is_optional(sim: Sim) -> None:
    assert (await sim.push(TransactionDesc=_DROP)).status_code == 200


async def test_a_wrong_password_or_unknown_shortcode_is_a_500(sim: Sim) -> None:
    wrong = await sim.push(**credentials(passkey="other"))
    assert error_of(wrong) == (500, "500.001.1001", "Wrong credentials")
    # The password must be built from the timestamp that is sent (a second earlier: a valid
    # time, unlike the stamp minus one at second 00).
    other_stamp = await sim.push(Timestamp=_nairobi_stamp(utcnow() - timedelta(seconds=1)))
    assert error_of(other_stamp)[2] == "Wrong credentials"
    unknown = await sim.push(BusinessShortCode="600000")
    assert error_of(unknown) == (500, "500.001.1001", "Merchant does not exist")


async def test_an_accepted_push_answers_like_daraja(sim: Sim) -> None:
    response = await sim.push()
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResponseCode",
        "ResponseDescription",
        "CustomerMessage",
    }
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CheckoutRequestID"].startswith("ws_CO_")
    [prompt] = sim.fake.prompts()
    assert prompt["checkout_request_id"] == body["CheckoutRequestID"]
    assert prompt["merchant_request_id"] == body["MerchantRequestID"]
    assert (prompt["phone"], prompt["amount"], prompt["account_reference"]) == (
        PHONE,
        1,
        "INV7K3QX9A",
    )
    assert (prompt["state"], prompt["result_code"]) == ("open", None)
    assert datetime.fromisoformat(prompt["at"]).tzinfo is not None


async def test_one_open_prompt_per_phone_even_under_concurrency(sim: Sim) -> None:
    responses = await asyncio.gather(*(sim.push(Amount=str(n)) for n in range(1, 21)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [500] * 19
    locked = [error_of(r) for r in responses if r.status_code == 500]
    assert {e[2] for e in locked} == {
        "Unable to lock subscriber, a transaction is already in process for the current subscriber"
    }
    assert len(sim.fake.prompts(phone=PHONE, state="open")) == 1
    # Other phones are not affected.
    assert (await sim.push(PhoneNumber="254112345678", PartyA="254112345678")).status_code == 200


async def test_the_same_phone_and_amount_within_two_minutes_gets_17(sim: Sim) -> None:
    first = (await sim.push(Amount="50")).json()["CheckoutRequestID"]
    await sim.fake.answer(first, "wrong_pin")
    second = await sim.push(Amount="50")
    assert second.status_code == 200
    second_id = second.json()["CheckoutRequestID"]
    # No prompt is shown for it: the phone is free at once.
    assert sim.fake.prompts(phone=PHONE, state="open") == []
    bodies = await callbacks(sim, 2)
    codes = {b["Body"]["stkCallback"]["CheckoutRequestID"]: b for b in bodies}
    assert codes[second_id]["Body"]["stkCallback"]["ResultCode"] == 17
    assert (await sim.query(second_id)).json()["ResultCode"] == "17"


async def test_the_repeat_window_is_configurable() -> None:
    async with running(SimulatorConfig(rule_limit_window_s=0.2)) as sim:
        first = (await sim.push(Amount="50")).json()["CheckoutRequestID"]
        await sim.fake.answer(first, "cancel")
        await asyncio.sleep(0.3)
        second = (await sim.push(Amount="50")).json()["CheckoutRequestID"]
        # Past the window: a real prompt, not ResultCode 17.
        assert [p["checkout_request_id"] for p in sim.fake.prompts(state="open")] == [second]


# STK Query


async def test_query_while_open_then_after_the_answer(sim: Sim) -> None:
    checkout = (await sim.push()).json()["CheckoutRequestID"]
    pending = await sim.query(checkout)
    assert error_of(pending) == (500, "500.001.1001", "The transaction is being processed")
    assert pending.json()["requestId"] == checkout
    await sim.fake.answer(checkout, "cancel")
    answered = await sim.query(checkout)
    assert answered.status_code == 200
    body = answered.json()
    assert (body["ResponseCode"], body["ResultCode"], body["ResultDesc"]) == (
        "0",
        "1032",
        "Request cancelled by user",
    )
    assert body["CheckoutRequestID"] == checkout


async def test_query_rules(sim: Sim) -> None:
    unknown = await sim.query("ws_CO_nothing")
    assert error_of(unknown) == (400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")
    wrong = await sim.query("ws_CO_nothing", **credentials(passkey="x"))
    assert error_of(wrong)[2] == "Wrong credentials"


# Callbacks: the documented shape, checked against the contract samples.


def contract_callback(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONTRACTS / name).read_text())
    data.pop("_source")
    stk: dict[str, Any] = data["Body"]["stkCallback"]
    return stk


async def test_a_success_callback_has_the_documented_shape(sim: Sim) -> None:
    checkout = (await sim.push(Amount="1500")).json()["CheckoutRequestID"]
    answered = await sim.fake.answer(checkout, "accept")
    assert (answered["state"], answered["result_code"]) == ("answered", "0")
    [body] = await callbacks(sim, 1)
    assert set(body) == {"Body"} and set(body["Body"]) == {"stkCallback"}
    stk = body["Body"]["stkCallback"]
    documented = contract_callback("callback_success.json")
    assert set(stk) == set(documented)
    assert stk["ResultCode"] == 0 and isinstance(stk["ResultCode"], int)
    items = stk["CallbackMetadata"]["Item"]
    assert [i["Name"] for i in items] == [i["Name"] for i in documented["CallbackMetadata"]["Item"]]
    assert [set(i) for i in items] == [set(i) for i in documented["CallbackMetadata"]["Item"]]
    values = {i["Name"]: i.get("Value") for i in items}
    assert isinstance(values["TransactionDate"], int) and isinstance(values["PhoneNumber"], int)
    receipt = values["MpesaReceiptNumber"]
    assert len(receipt) == 10 and receipt.isalnum() and receipt.isupper()
    parsed = parse_callback(body)
    assert parsed.succeeded and parsed.amount == 1500 and parsed.phone == PHONE
    assert parsed.transaction_date is not None
    assert abs(parsed.transaction_date - utcnow()) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("action", "code"),
    [("cancel", 1032), ("timeout", 1037), ("wrong_pin", 2001), ("insufficient_funds", 1)],
)
async def test_failure_callbacks_have_no_metadata(sim: Sim, action: Any, code: int) -> None:
    checkout = (await sim.push()).json()["CheckoutRequestID"]
    await sim.fake.answer(checkout, action)
    [body] = await callbacks(sim, 1)
    stk = body["Body"]["stkCallback"]
    assert set(stk) == set(contract_callback("callback_failed_1032.json"))
    assert stk["ResultCode"] == code
    assert parse_callback(body).result_code == str(code)


async def test_answering_twice_or_an_unknown_prompt(sim: Sim) -> None:
    checkout = (await sim.push()).json()["CheckoutRequestID"]
    await sim.fake.answer(checkout, "accept")
    with pytest.raises(ValueError, match="already"):
        await sim.fake.answer(checkout, "cancel")
    with pytest.raises(KeyError):
        await sim.fake.answer("ws_CO_unknown", "accept")
    await callbacks(sim, 1)
    await asyncio.sleep(QUIET)
    assert len(sim.callbacks.received) == 1


async def test_prompts_filter_by_phone_and_state(sim: Sim) -> None:
    other = "254112345678"
    first = (await sim.push()).json()["CheckoutRequestID"]
    await sim.push(PhoneNumber=other, PartyA=other)
    await sim.fake.answer(first, "cancel")
    assert [p["phone"] for p in sim.fake.prompts()] == [PHONE, other]
    assert [p["phone"] for p in sim.fake.prompts(state="open")] == [other]
    assert [p["result_code"] for p in sim.fake.prompts(phone=PHONE)] == ["1032"]
    assert sim.fake.prompts(phone=other, state="answered") == []


async def test_an_answer_delay_holds_the_callback_back(sim: Sim) -> None:
    checkout = (await sim.push()).json()["CheckoutRequestID"]
    await sim.fake.answer(checkout, "accept", delay_ms=400)
    # The answer is known to a query at once; the callback comes later.
    assert (await sim.query(checkout)).json()["ResultCode"] == "0"
    await asyncio.sleep(0.1)
    assert sim.callbacks.received == []
    await callbacks(sim, 1)


async def test_prompts_time_out_with_1037() -> None:
    async with running(SimulatorConfig(prompt_timeout_s=0.2)) as sim:
        checkout = (await sim.push()).json()["CheckoutRequestID"]
        [body] = await callbacks(sim, 1)
        assert body["Body"]["stkCallback"]["ResultCode"] == 1037
        assert sim.fake.prompts()[0]["state"] == "answered"
        with pytest.raises(ValueError, match="already"):
            await sim.fake.answer(checkout, "accept")


async def test_auto_answer_takes_the_phone_queue_then_the_default() -> None:
    auto = AutoAnswer(default="accept", delay_ms=10, phones={PHONE: ["cancel", "wrong_pin"]})
    async with running(SimulatorConfig(auto_answer=auto)) as sim:
        codes: list[int] = []
        for amount in ("1", "2", "3"):
            await sim.push(Amount=amount)
            bodies = await callbacks(sim, len(codes) + 1)
            codes.append(bodies[-1]["Body"]["stkCallback"]["ResultCode"])
        assert codes == [1032, 2001, 0]
        # The config's own queue is left as it was (GET /simulator/config shows it whole).
        assert sim.settings.config.auto_answer.phones[PHONE] == ["cancel", "wrong_pin"]


async def test_callback_faults_drop_duplicate_and_delay(sim: Sim) -> None:
    sim.settings.update(SimulatorConfig(faults=Faults(callbacks=CallbackFaults(drop=1.0))))
    dropped = (await sim.push(Amount="1")).json()["CheckoutRequestID"]
    await sim.fake.answer(dropped, "accept")
    await asyncio.sleep(QUIET)
    assert sim.callbacks.received == []
    # The payment happened all the same: only the query can tell.
    assert (await sim.query(dropped)).json()["ResultCode"] == "0"

    sim.settings.update(
        SimulatorConfig(faults=Faults(callbacks=CallbackFaults(duplicate=1.0, delay_ms=200)))
    )
    doubled = (await sim.push(Amount="2")).json()["CheckoutRequestID"]
    await sim.fake.answer(doubled, "accept")
    await asyncio.sleep(0.05)
    assert sim.callbacks.received == []
    first, second = await callbacks(sim, 2)
    assert first == second
    assert first["Body"]["stkCallback"]["CheckoutRequestID"] == doubled


async def test_an_unreachable_callback_url_is_not_retried(sim: Sim) -> None:
    checkout = (await sim.push(CallBackURL="http://127.0.0.1:9/cb")).json()["CheckoutRequestID"]
    await sim.fake.answer(checkout, "accept")
    await asyncio.sleep(QUIET)
    assert (await sim.query(checkout)).json()["ResultCode"] == "0"


# PayBill and till accounts


async def test_a_till_account() -> None:
    async with running(party_b=TILL) as sim:
        till_push = {"TransactionType": "CustomerBuyGoodsOnline", "PartyB": TILL}
        ok = await sim.push(**till_push)
        assert ok.status_code == 200
        await sim.fake.answer(ok.json()["CheckoutRequestID"], "cancel")
        # Accepted, then refused by M-PESA without a prompt (result codes 2028, SFC_IC0003).
        paybill = await sim.push(Amount="2", PhoneNumber="254700000001", PartyA="254700000001")
        wrong_b = await sim.push(
            Amount="3",
            PartyB="600001",
            PhoneNumber="254700000002",
            PartyA="254700000002",
            TransactionType="CustomerBuyGoodsOnline",
        )
        bodies = await callbacks(sim, 3)
        by_id = {b["Body"]["stkCallback"]["CheckoutRequestID"]: b for b in bodies}
        refused = by_id[paybill.json()["CheckoutRequestID"]]["Body"]["stkCallback"]
        assert refused["ResultCode"] == 2028
        operator = by_id[wrong_b.json()["CheckoutRequestID"]]
        assert operator["Body"]["stkCallback"]["ResultCode"] == "SFC_IC0003"
        assert parse_callback(operator).result_code == "SFC_IC0003"


async def test_a_paybill_account_given_its_own_shortcode_as_party_b() -> None:
    # How the app builds it: party_b = MPESA_PARTY_B, which defaults to the shortcode.
    async with running(party_b=SHORTCODE) as sim:
        assert (await sim.push()).status_code == 200
        till = await sim.push(
            TransactionType="CustomerBuyGoodsOnline",
            PhoneNumber="254700000003",
            PartyA="254700000003",
        )
        assert till.status_code == 200
        [body] = await callbacks(sim, 1)
        assert body["Body"]["stkCallback"]["ResultCode"] == 2028


# Gateway faults


async def test_spike_arrest_and_5xx_have_their_shapes(sim: Sim) -> None:
    sim.settings.update(SimulatorConfig(faults=Faults(daraja=DarajaFaults(spike_arrest=1.0))))
    spike = await sim.push()
    assert spike.status_code == 429
    assert spike.json()["fault"]["detail"]["errorcode"] == "policies.ratelimit.SpikeArrestViolation"
    sim.settings.update(SimulatorConfig(faults=Faults(daraja=DarajaFaults(error_5xx=1.0))))
    assert error_of(await sim.query("ws_CO_x")) == (500, "500.003.1001", "Internal Server Error")
    assert sim.fake.prompts() == []


async def test_timeout_after_holds_the_answer_but_opens_the_prompt() -> None:
    config = SimulatorConfig(
        faults=Faults(daraja=DarajaFaults(timeout_after=1.0)), timeout_hold_s=0.3
    )
    async with running(config) as sim:
        started = asyncio.get_running_loop().time()
        response = await sim.push()
        assert asyncio.get_running_loop().time() - started >= 0.3
        # The answer still says accepted; a client with a shorter timeout never sees it.
        assert response.status_code == 200
        assert len(sim.fake.prompts(state="open")) == 1


async def run_pushes(sim: Sim, count: int) -> list[int]:
    statuses = []
    for n in range(count):
        phone = f"2547000001{n:02d}"
        response = await sim.push(PhoneNumber=phone, PartyA=phone)
        statuses.append(response.status_code)
    return statuses


async def test_seeded_faults_repeat(sim: Sim) -> None:
    config = SimulatorConfig(
        seed=7, faults=Faults(daraja=DarajaFaults(spike_arrest=0.3, error_5xx=0.3))
    )
    sim.settings.update(config)
    first = await run_pushes(sim, 16)
    sim.fake.reset()
    sim.settings.update(config)
    await sim.new_token()
    assert await run_pushes(sim, 16) == first
    assert {200, 429, 500} <= set(first)
    sim.fake.reset()
    sim.settings.update(config.model_copy(update={"seed": 8}))
    await sim.new_token()
    assert await run_pushes(sim, 16) != first


async def test_reset_forgets_prompts_and_tokens(sim: Sim) -> None:
    await sim.push()
    sim.fake.reset()
    assert sim.fake.prompts() == []
    assert error_of(await sim.push())[1] == "404.001.03"
    await sim.new_token()
    # The phone is free again.
    assert (await sim.push()).status_code == 200
