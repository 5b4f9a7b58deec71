"""The simulator's phones UI in a real browser (Debian's chromium, driven by Playwright).

Needs /usr/bin/chromium (`apt-get install -y chromium`, which .ci/run must do on a new machine).
Without it the test is skipped locally, loudly, and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from invoiceiq.config import SANDBOX_PASSKEY, SANDBOX_SHORTCODE, Settings
from invoiceiq.simulator.app import create_standalone_app
from support.db import make_settings
from support.servers import Recorder, serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
NAIROBI = ZoneInfo("Africa/Nairobi")
CUSTOMER = "254711000222"
UI_TIMEOUT_MS = 10_000


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"!!! BROWSER TEST SKIPPED: {reason} !!!")


try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    _need(
        async_playwright is not None,
        "the playwright package is not installed (pip install -e .[dev])",
    )
    _need(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def stk_push(api: httpx.AsyncClient, settings: Settings, *, phone: str, callback: str) -> str:
    """An STK push through the fake Daraja routes, as the app's client would send it."""
    token = await api.get(
        "/daraja/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(
            settings.mpesa_consumer_key.get_secret_value(),
            settings.mpesa_consumer_secret.get_secret_value(),
        ),
    )
    timestamp = datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S")
    password = base64.b64encode(
        f"{SANDBOX_SHORTCODE}{SANDBOX_PASSKEY}{timestamp}".encode()
    ).decode()
    response = await api.post(
        "/daraja/mpesa/stkpush/v1/processrequest",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        json={
            "BusinessShortCode": SANDBOX_SHORTCODE,
            "Password": password,
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 1500,
            "PartyA": phone,
            "PartyB": SANDBOX_SHORTCODE,
            "PhoneNumber": phone,
            "CallBackURL": callback,
            "AccountReference": "INV7K3QX9A",
            "TransactionDesc": "Invoice",
        },
    )
    assert response.status_code == 200, response.text
    checkout: str = response.json()["CheckoutRequestID"]
    return checkout


async def send_buttons(api: httpx.AsyncClient, settings: Settings, *, to: str, body: str) -> None:
    """The business sends an interactive reply-button message through the fake 360dialog."""
    response = await api.post(
        "/whatsapp/messages",
        headers={"D360-API-KEY": settings.whatsapp_api_key.get_secret_value()},
        json={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": body},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "pay:INV7K3QX9A", "title": "Pay"}}
                    ]
                },
            },
        },
    )
    assert response.status_code == 200, response.text


def phone_messages(receiver: Recorder) -> list[dict[str, Any]]:
    return [
        message
        for item in receiver.received
        if item.path == "/whatsapp/webhook"
        for entry in item.json()["entry"]
        for change in entry["changes"]
        for message in change["value"].get("messages", [])
    ]


async def test_two_phones_chat_buttons_and_the_pin_prompt(browser: Browser) -> None:
    receiver = Recorder()
    async with serve_app(receiver.app()) as receiver_url:
        settings = make_settings(base_url=receiver_url)
        async with (
            serve_app(create_standalone_app(settings)) as base_url,
            httpx.AsyncClient(base_url=f"{base_url}/simulator", timeout=10) as api,
        ):
            page = await browser.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    page_errors.append(message.text) if message.type == "error" else None
                ),
            )
            await page.goto(f"{base_url}/simulator")

            await see_both_phones(page)
            await chat_as_the_customer(page, receiver)
            body = "Invoice <b>INV7K3QX9A</b> for *KSh 1,500*: https://pay.example/i/abc "
            body += "javascript:x()"
            await send_buttons(api, settings, to=CUSTOMER, body=body)
            await tap_the_reply_button(page, receiver)

            checkout = await stk_push(
                api, settings, phone=CUSTOMER, callback=f"{receiver_url}/payments/stk/callback/s"
            )
            await pay_from_the_pin_prompt(page)
            await prompt_answered_with(api, checkout, result_code="0")

            assert page_errors == []


async def see_both_phones(page: Page) -> None:
    await expect(page.get_by_test_id("phone-merchant")).to_be_visible()
    await expect(page.get_by_test_id("phone-customer")).to_be_visible()
    await expect(page.get_by_test_id("number-merchant")).to_have_value("254700000001")
    await expect(page.get_by_test_id("number-customer")).to_have_value("254700000002")
    await expect(page.get_by_test_id("stk-prompt")).to_be_hidden()
    # The numbers are editable; a local 07… number is written as the providers write it.
    number = page.get_by_test_id("number-customer")
    await number.fill("0711 000 222")
    await number.press("Enter")
    await number.blur()
    await expect(number).to_have_value(CUSTOMER)


async def chat_as_the_customer(page: Page, receiver: Recorder) -> None:
    await page.get_by_test_id("text-customer").fill("Habari <script>x</script>")
    await page.get_by_test_id("send-customer").click()

    sent = page.get_by_test_id("chat-customer").get_by_test_id("msg-out")
    await expect(sent).to_have_count(1)
    await expect(sent).to_contain_text("Habari <script>x</script>")
    await expect(sent).to_have_attribute("data-webhook-status", "200")
    [message] = phone_messages(receiver)
    assert message["from"] == CUSTOMER
    assert message["text"]["body"] == "Habari <script>x</script>"


async def tap_the_reply_button(page: Page, receiver: Recorder) -> None:
    chat = page.get_by_test_id("chat-customer")
    received = chat.get_by_test_id("msg-in")
    await expect(received).to_have_count(1, timeout=UI_TIMEOUT_MS)
    # Rendered as text: the markup shows, nothing is interpreted; as WhatsApp does, *words*
    # are bold and an http(s) address is a link (nothing else is).
    await expect(received).to_contain_text("Invoice <b>INV7K3QX9A</b> for KSh 1,500: https://")
    await expect(received.locator("b")).to_have_count(0)
    await expect(received.locator("strong")).to_have_text("KSh 1,500")
    links = received.locator("a")
    await expect(links).to_have_count(1)
    await expect(links).to_have_attribute("href", "https://pay.example/i/abc")
    await expect(links).to_have_attribute("rel", "noopener noreferrer")
    await expect(received.get_by_test_id("status")).to_have_attribute(
        "title", "read", timeout=UI_TIMEOUT_MS
    )

    await received.get_by_test_id("reply-button").click()

    await expect(chat.get_by_test_id("msg-out")).to_have_count(2)
    await receiver.wait_for(lambda _: len(phone_messages(receiver)) == 2)
    tap = phone_messages(receiver)[1]
    assert tap["interactive"]["button_reply"]["id"] == "pay:INV7K3QX9A"


async def pay_from_the_pin_prompt(page: Page) -> None:
    prompt = page.get_by_test_id("stk-prompt")
    await expect(prompt).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.get_by_test_id("stk-amount")).to_have_text("1,500")
    await expect(page.get_by_test_id("stk-account")).to_have_text("INV7K3QX9A")
    await expect(page.get_by_test_id("stk-shortcode")).to_have_text(SANDBOX_SHORTCODE)

    await page.get_by_test_id("stk-pin").fill("1234")
    await page.get_by_test_id("stk-ok").click()

    await expect(prompt).to_be_hidden()
    await expect(page.get_by_test_id("chat-customer").get_by_test_id("msg-system")).to_contain_text(
        "PIN entered"
    )


async def prompt_answered_with(api: httpx.AsyncClient, checkout: str, *, result_code: str) -> None:
    async with asyncio.timeout(5):
        while True:
            prompts = (await api.get("/mpesa/prompts", params={"state": "answered"})).json()
            if prompts:
                break
            await asyncio.sleep(0.05)
    [prompt] = prompts
    assert prompt["checkout_request_id"] == checkout
    assert prompt["result_code"] == result_code
    assert (await api.get("/mpesa/prompts", params={"state": "open"})).json() == []
