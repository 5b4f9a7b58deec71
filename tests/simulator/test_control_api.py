"""The simulator's control API over real HTTP, with both fakes composed and a stand-in app.

The stand-in (`Recorder`) plays the product's webhook and STK callback; the simulator is the
standalone server (`create_standalone_app`), whose webhook starts at `BASE_URL/whatsapp/webhook`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from invoiceiq.config import SANDBOX_PASSKEY, SANDBOX_SHORTCODE, Settings
from invoiceiq.simulator.app import (
    Simulator,
    create_simulator,
    create_standalone_app,
    mount_simulator,
    register_app_webhook,
)
from support.db import make_settings
from support.servers import Received, Recorder, serve_app

CUSTOMER = "254700000002"
MERCHANT = "254700000001"
WEBHOOK_SECRET = "test-webhook-secret"
NAIROBI = ZoneInfo("Africa/Nairobi")


@dataclass
class Stack:
    api: httpx.AsyncClient  # base URL: the simulator's mount, /simulator
    simulator: Simulator
    settings: Settings
    receiver: Recorder
    receiver_url: str


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    receiver = Recorder()
    async with serve_app(receiver.app()) as receiver_url:
        settings = make_settings(base_url=receiver_url, whatsapp_webhook_secret=WEBHOOK_SECRET)
        app = create_standalone_app(settings)
        async with (
            serve_app(app) as base_url,
            httpx.AsyncClient(base_url=f"{base_url}/simulator", timeout=10) as api,
        ):
            yield Stack(api, app.state.simulator, settings, receiver, receiver_url)


def webhooks(received: list[Received]) -> list[dict[str, Any]]:
    return [item.json() for item in received if item.path == "/whatsapp/webhook"]


def inbound_messages(received: list[Received]) -> list[dict[str, Any]]:
    return [
        message
        for envelope in webhooks(received)
        for entry in envelope["entry"]
        for change in entry["changes"]
        for message in change["value"].get("messages", [])
    ]


def statuses(received: list[Received]) -> list[dict[str, Any]]:
    return [
        status
        for envelope in webhooks(received)
        for entry in envelope["entry"]
        for change in entry["changes"]
        for status in change["value"].get("statuses", [])
    ]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


async def send_text(stack: Stack, to: str, body: str) -> str:
    """The business sends a free-form text through the fake 360dialog API; its wamid."""
    response = await stack.api.post(
        "/whatsapp/messages",
        headers={"D360-API-KEY": stack.settings.whatsapp_api_key.get_secret_value()},
        json={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": body},
        },
    )
    assert response.status_code == 200, response.text
    wamid: str = response.json()["messages"][0]["id"]
    return wamid


async def stk_push(
    stack: Stack, *, phone: str, amount: int = 1500, reference: str = "INV7K3QX9A"
) -> str:
    """An STK push through the fake Daraja routes, built as Daraja documents it; its id."""
    settings = stack.settings
    token = await stack.api.get(
        "/daraja/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(
            settings.mpesa_consumer_key.get_secret_value(),
            settings.mpesa_consumer_secret.get_secret_value(),
        ),
    )
    assert token.status_code == 200, token.text
    timestamp = datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S")
    password = base64.b64encode(
        f"{SANDBOX_SHORTCODE}{SANDBOX_PASSKEY}{timestamp}".encode()
    ).decode()
    response = await stack.api.post(
        "/daraja/mpesa/stkpush/v1/processrequest",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        json={
            "BusinessShortCode": SANDBOX_SHORTCODE,
            "Password": password,
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": amount,
            "PartyA": phone,
            "PartyB": SANDBOX_SHORTCODE,
            "PhoneNumber": phone,
            "CallBackURL": f"{stack.receiver_url}/payments/stk/callback/cb-secret",
            "AccountReference": reference,
            "TransactionDesc": "Invoice",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["ResponseCode"] == "0"
    checkout: str = response.json()["CheckoutRequestID"]
    return checkout


async def eventually(check: Any, *, timeout: float = 5.0) -> Any:
    """Await `check()` until it returns something truthy; that value."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


# Phones write to the business.


async def test_phone_text_reaches_the_app_webhook_as_a_cloud_api_envelope(stack: Stack) -> None:
    response = await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "Habari"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["webhook_status"] == 200
    [received] = [item for item in stack.receiver.received if item.path == "/whatsapp/webhook"]
    assert received.headers["x-webhook-secret"] == WEBHOOK_SECRET
    envelope = received.json()
    assert envelope["object"] == "whatsapp_business_account"
    [message] = inbound_messages(stack.receiver.received)
    assert message["id"] == body["wamid"]
    assert message["from"] == CUSTOMER
    assert message["type"] == "text"
    assert message["text"]["body"] == "Habari"


async def test_webhook_status_is_what_the_app_answered(stack: Stack) -> None:
    stack.receiver.status = 503

    response = await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "hello"})

    assert response.status_code == 200, response.text
    assert response.json()["webhook_status"] == 503


async def test_button_taps_arrive_as_reply_and_template_buttons(stack: Stack) -> None:
    reply = await stack.api.post(
        f"/phones/{CUSTOMER}/messages", json={"button_id": "pay:INV7K3QX9A", "kind": "reply"}
    )
    template = await stack.api.post(
        f"/phones/{CUSTOMER}/messages", json={"button_id": "pay:INV7K3QX9A", "kind": "template"}
    )

    assert reply.status_code == 200 and template.status_code == 200
    tapped_reply, tapped_template = inbound_messages(stack.receiver.received)
    assert tapped_reply["type"] == "interactive"
    assert tapped_reply["interactive"]["button_reply"]["id"] == "pay:INV7K3QX9A"
    assert tapped_template["type"] == "button"
    assert tapped_template["button"]["payload"] == "pay:INV7K3QX9A"


async def test_raw_message_is_posted_as_given(stack: Stack) -> None:
    raw = {"type": "text", "text": {"body": "raw hello"}}

    response = await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"raw": raw})

    assert response.status_code == 200, response.text
    [message] = inbound_messages(stack.receiver.received)
    assert message["text"]["body"] == "raw hello"
    assert message["from"] == CUSTOMER


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "hi", "button_id": "pay:X"},
        {"text": "hi", "kind": "template"},
        {"button_id": "pay:X", "kind": "list"},
        {"text": ""},
        {"text": "hi", "colour": "blue"},
    ],
)
async def test_malformed_phone_messages_are_422_in_the_error_shape(
    stack: Stack, body: dict[str, Any]
) -> None:
    response = await stack.api.post(f"/phones/{CUSTOMER}/messages", json=body)

    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"
    assert stack.receiver.received == []


async def test_a_body_that_is_not_json_is_422(stack: Stack) -> None:
    response = await stack.api.post(
        f"/phones/{CUSTOMER}/messages",
        content=b"text=hi",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


@pytest.mark.parametrize(
    "msisdn", ["0712345678", "+254712345678", "25471234567", "254201234567", "abc"]
)
async def test_phone_numbers_in_paths_must_be_kenyan_mobiles_in_e164_digits(
    stack: Stack, msisdn: str
) -> None:
    written = await stack.api.post(f"/phones/{msisdn}/messages", json={"text": "hi"})
    inbox = await stack.api.get(f"/phones/{msisdn}/inbox")
    moved = await stack.api.put(
        f"/phones/{msisdn}/last-inbound", json={"at": datetime.now(UTC).isoformat()}
    )
    prompts = await stack.api.get("/mpesa/prompts", params={"phone": msisdn})

    for response in (written, inbox, moved, prompts):
        assert response.status_code == 422, response.text
        error = error_of(response)
        assert error["code"] == "invalid_msisdn"
        assert "2547" in error["message"]
    assert stack.receiver.received == []


# What the phone received.


async def test_inbox_lists_messages_oldest_first_and_after_a_wamid(stack: Stack) -> None:
    await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "hi"})
    first = await send_text(stack, CUSTOMER, "one")
    second = await send_text(stack, CUSTOMER, "two <b>")
    third = await send_text(stack, CUSTOMER, "three")

    everything = (await stack.api.get(f"/phones/{CUSTOMER}/inbox")).json()
    later = (await stack.api.get(f"/phones/{CUSTOMER}/inbox", params={"after": first})).json()
    others = (await stack.api.get(f"/phones/{MERCHANT}/inbox")).json()

    assert [m["wamid"] for m in everything] == [first, second, third]
    assert [m["wamid"] for m in later] == [second, third]
    assert others == []
    item = everything[1]
    assert item["type"] == "text"
    assert item["text"] == "two <b>"
    assert item["buttons"] == []
    assert item["template"] is None
    assert item["payload"]["text"] == {"body": "two <b>"}
    assert {"status", "error_code", "at"} <= set(item)


async def test_statuses_reach_read_in_the_inbox_and_at_the_webhook(stack: Stack) -> None:
    await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "hi"})
    wamid = await send_text(stack, CUSTOMER, "one")

    async def read() -> bool:
        [item] = (await stack.api.get(f"/phones/{CUSTOMER}/inbox")).json()
        return bool(item["status"] == "read")

    await eventually(read)
    await stack.receiver.wait_for(
        lambda got: (
            [s["status"] for s in statuses(got) if s["id"] == wamid]
            == ["sent", "delivered", "read"]
        )
    )


async def test_last_inbound_moves_the_customer_window(stack: Stack) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2)
    moved = await stack.api.put(
        f"/phones/{CUSTOMER}/last-inbound", json={"at": long_ago.isoformat()}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["msisdn"] == CUSTOMER
    outside = await send_text(stack, CUSTOMER, "outside the window")

    await stack.api.put(
        f"/phones/{CUSTOMER}/last-inbound", json={"at": datetime.now(UTC).isoformat()}
    )
    inside = await send_text(stack, CUSTOMER, "inside the window")

    async def settled() -> dict[str, Any] | None:
        items = {m["wamid"]: m for m in (await stack.api.get(f"/phones/{CUSTOMER}/inbox")).json()}
        done = all(m["status"] in ("read", "failed") for m in items.values())
        return items if done and len(items) == 2 else None

    items = await eventually(settled)
    assert items[outside]["status"] == "failed"
    assert str(items[outside]["error_code"]) == "131047"
    assert items[inside]["status"] == "read"


@pytest.mark.parametrize("at", ["2024-11-26T10:00:00", "yesterday", None])
async def test_last_inbound_needs_an_iso_time_with_its_zone(stack: Stack, at: str | None) -> None:
    response = await stack.api.put(f"/phones/{CUSTOMER}/last-inbound", json={"at": at})

    assert response.status_code == 422
    assert error_of(response)["fields"].keys() == {"at"}


# M-PESA prompts.


async def test_prompts_are_listed_and_answered_once(stack: Stack) -> None:
    checkout = await stk_push(stack, phone=CUSTOMER)

    open_prompts = (
        await stack.api.get("/mpesa/prompts", params={"phone": CUSTOMER, "state": "open"})
    ).json()
    assert [p["checkout_request_id"] for p in open_prompts] == [checkout]
    prompt = open_prompts[0]
    assert prompt["phone"] == CUSTOMER
    assert int(prompt["amount"]) == 1500
    assert prompt["account_reference"] == "INV7K3QX9A"
    assert prompt["state"] == "open"
    assert prompt["result_code"] is None
    assert (await stack.api.get("/mpesa/prompts", params={"phone": MERCHANT})).json() == []

    answered = await stack.api.post(f"/mpesa/prompts/{checkout}", json={"action": "cancel"})
    again = await stack.api.post(f"/mpesa/prompts/{checkout}", json={"action": "accept"})

    assert answered.status_code == 200, answered.text
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"
    [done] = (await stack.api.get("/mpesa/prompts", params={"state": "answered"})).json()
    assert done["checkout_request_id"] == checkout
    assert done["result_code"] == "1032"
    assert (await stack.api.get("/mpesa/prompts", params={"state": "open"})).json() == []
    callbacks = await stack.receiver.wait_for(
        lambda got: any(item.path.startswith("/payments/stk/callback/") for item in got)
    )
    [callback] = [item.json() for item in callbacks if item.path.startswith("/payments/")]
    assert callback["Body"]["stkCallback"]["CheckoutRequestID"] == checkout
    assert callback["Body"]["stkCallback"]["ResultCode"] == 1032


async def test_answering_an_unknown_prompt_is_404(stack: Stack) -> None:
    response = await stack.api.post("/mpesa/prompts/ws_CO_nothing", json={"action": "accept"})

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    "body", [{"action": "pay"}, {"action": "accept", "delay_ms": -1}, {"delay_ms": 0}]
)
async def test_malformed_answers_are_422(stack: Stack, body: dict[str, Any]) -> None:
    checkout = await stk_push(stack, phone=CUSTOMER)

    response = await stack.api.post(f"/mpesa/prompts/{checkout}", json=body)

    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


async def test_prompt_state_filter_is_validated(stack: Stack) -> None:
    response = await stack.api.get("/mpesa/prompts", params={"state": "closed"})

    assert response.status_code == 422
    assert error_of(response)["fields"].keys() == {"state"}


# Config and reset.


async def test_config_starts_with_the_defaults_and_the_apps_customer_window(stack: Stack) -> None:
    config = (await stack.api.get("/config")).json()

    assert config["seed"] == 1
    assert config["auto_answer"]["default"] is None
    assert config["faults"]["whatsapp"]["error_5xx"] == 0.0
    assert config["customer_window_s"] == stack.settings.customer_window


async def test_a_put_config_keeps_the_apps_customer_window_unless_it_says_otherwise() -> None:
    """A test that shrinks CUSTOMER_WINDOW, then sets faults, must not find the simulator back
    at 24 hours: the app and the simulator would disagree on who can get free-form text."""
    app = create_standalone_app(make_settings(customer_window=7))
    async with (
        serve_app(app) as base_url,
        httpx.AsyncClient(base_url=f"{base_url}/simulator", timeout=10) as api,
    ):
        faults = await api.put("/config", json={"faults": {"whatsapp": {"error_5xx": 0.5}}})
        window = await api.put("/config", json={"customer_window_s": 3})
    assert faults.status_code == 200, faults.text
    assert faults.json()["customer_window_s"] == 7
    assert faults.json()["faults"]["whatsapp"]["error_5xx"] == 0.5
    assert window.json()["customer_window_s"] == 3
    assert window.json()["faults"]["whatsapp"]["error_5xx"] == 0.0  # left out: replaced


@pytest.mark.parametrize(
    "body",
    [
        {"seed": 1, "colour": "blue"},
        {"faults": {"whatsapp": {"error_5xx": 2}}},
        {"auto_answer": {"default": "maybe"}},
        {"prompt_timeout_s": 0},
        [],
    ],
)
async def test_a_bad_config_is_422_and_changes_nothing(stack: Stack, body: Any) -> None:
    before = (await stack.api.get("/config")).json()

    response = await stack.api.put("/config", json=body)

    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"
    assert (await stack.api.get("/config")).json() == before


async def test_auto_answer_from_config_accepts_a_new_prompt(stack: Stack) -> None:
    response = await stack.api.put(
        "/config", json={"seed": 7, "auto_answer": {"default": "accept", "delay_ms": 0}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["auto_answer"]["default"] == "accept"
    assert (await stack.api.get("/config")).json()["seed"] == 7

    checkout = await stk_push(stack, phone=CUSTOMER)

    async def answered() -> list[dict[str, Any]]:
        prompts: list[dict[str, Any]] = (
            await stack.api.get("/mpesa/prompts", params={"state": "answered"})
        ).json()
        return prompts

    [prompt] = await eventually(answered)
    assert prompt["checkout_request_id"] == checkout
    assert prompt["result_code"] == "0"
    got = await stack.receiver.wait_for(
        lambda items: any(item.path.startswith("/payments/") for item in items)
    )
    [callback] = [item.json() for item in got if item.path.startswith("/payments/")]
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0


async def test_reset_clears_state_and_keeps_the_webhook(stack: Stack) -> None:
    await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "hi"})
    await send_text(stack, CUSTOMER, "one")
    await stk_push(stack, phone=CUSTOMER)
    await stack.api.put("/config", json={"seed": 9, "prompt_timeout_s": 5})

    response = await stack.api.post("/reset")

    assert response.status_code == 200, response.text
    assert (await stack.api.get(f"/phones/{CUSTOMER}/inbox")).json() == []
    assert (await stack.api.get("/mpesa/prompts")).json() == []
    config = (await stack.api.get("/config")).json()
    assert (config["seed"], config["prompt_timeout_s"]) == (1, 60)
    written = await stack.api.post(f"/phones/{CUSTOMER}/messages", json={"text": "again"})
    assert written.json()["webhook_status"] == 200
    assert [m["text"]["body"] for m in inbound_messages(stack.receiver.received)][-1] == "again"
    # A prompt for the same phone can be raised again: the old one is gone.
    await stk_push(stack, phone=CUSTOMER, amount=10)


async def test_the_ui_is_served_at_the_mount_point(stack: Stack) -> None:
    root = str(stack.api.base_url).rstrip("/")
    bare = await stack.api.get(root)
    page = await stack.api.get(f"{root}/")
    script = await stack.api.get(f"{root}/static/phones.js")

    assert bare.status_code == 307
    assert bare.headers["location"] == "/simulator/"
    assert page.status_code == 200
    assert 'data-testid="phone-merchant"' in page.text
    assert 'data-base="/simulator"' in page.text
    assert "/simulator/static/phones.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200


async def test_mounted_in_an_app_without_a_webhook_phone_writes_are_409() -> None:
    settings = make_settings()
    simulator = create_simulator(settings)
    host = FastAPI()

    @host.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    mount_simulator(host, simulator)
    try:
        async with (
            serve_app(host) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        ):
            refused = await client.post(
                f"/simulator/phones/{CUSTOMER}/messages", json={"text": "hi"}
            )
            assert refused.status_code == 409
            assert error_of(refused)["code"] == "no_webhook"

            receiver = Recorder()
            async with serve_app(receiver.app()) as receiver_url:
                register_app_webhook(simulator, local_origin=receiver_url, secret="s")
                written = await client.post(
                    f"/simulator/phones/{CUSTOMER}/messages", json={"text": "hi"}
                )
            assert written.json()["webhook_status"] == 200
            assert receiver.received[0].headers["x-webhook-secret"] == "s"
            assert (await client.get("/healthz")).json() == {"ok": True}
            assert (await client.get("/simulator/config")).status_code == 200
    finally:
        await simulator.aclose()
