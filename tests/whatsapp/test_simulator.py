"""The simulator's 360dialog fake over real HTTP: WhatsApp's rules, statuses, phones, faults.

Everything the fake posts to the stand-in product webhook is parsed with the product's own
schemas (`invoiceiq.whatsapp.schemas`), so the fake and the parser keep each other honest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.simulator.config import SimulatorConfig, SimulatorSettings, WebhookFaults
from invoiceiq.whatsapp.client import WhatsAppClient
from invoiceiq.whatsapp.errors import WhatsAppError
from invoiceiq.whatsapp.schemas import (
    InboundMessage,
    StatusUpdate,
    WebhookEnvelope,
    inbound_events,
)
from invoiceiq.whatsapp.simulator import WebhookNotRegistered, WhatsAppFake
from invoiceiq.whatsapp.simulator_webhooks import NO_ANSWER
from invoiceiq.whatsapp.templates import load_templates
from support.servers import Received, Recorder, closed_port_url, serve_app

API_KEY = "test-d360-key"
SECRET_HEADERS = {"X-Webhook-Secret": "s3cret"}
CUSTOMER = "254712345678"
MERCHANT = "254722000111"
REVIEW_PARAMS = ["KES 1,500", "INV7K3QX9A", "the invoice was already paid"]
DEFAULTS = SimulatorConfig(timeout_hold_s=0.3, status_delay_ms=0)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Rig:
    fake: WhatsAppFake
    settings: SimulatorSettings
    client: WhatsAppClient
    receiver: Recorder
    api_url: str
    receiver_url: str
    http: httpx.AsyncClient

    def configure(self, **changes: Any) -> None:
        self.settings.update(self.settings.config.model_copy(update=changes))

    def events(self) -> tuple[list[InboundMessage], list[StatusUpdate]]:
        """Everything the product webhook received, parsed with the product's schemas."""
        messages: list[InboundMessage] = []
        statuses: list[StatusUpdate] = []
        for request in self.receiver.received:
            found = inbound_events(WebhookEnvelope.model_validate(request.json()))
            messages += found[0]
            statuses += found[1]
        return messages, statuses

    def statuses(self, wamid: str) -> list[tuple[str, int | None]]:
        return [(s.status, s.error_code) for s in self.events()[1] if s.message_id == wamid]

    async def wait_statuses(self, wamid: str, expected: list[tuple[str, int | None]]) -> None:
        await self.receiver.wait_for(lambda _: self.statuses(wamid) == expected)


DELIVERED: list[tuple[str, int | None]] = [("sent", None), ("delivered", None), ("read", None)]
FAILED_131047: list[tuple[str, int | None]] = [("failed", 131047)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running() -> AsyncIterator[Rig]:
    settings = SimulatorSettings(DEFAULTS)
    async with make_http_client(Timeouts(connect=1, read=2, write=2, pool=1)) as http:
        fake = WhatsAppFake(settings, load_templates(), api_key=API_KEY, http=http)
        app = FastAPI()
        app.include_router(fake.router, prefix="/simulator/whatsapp")
        receiver = Recorder()
        async with serve_app(app) as base, serve_app(receiver.app()) as receiver_base:
            api_url = base + "/simulator/whatsapp"
            client = WhatsAppClient(api_url, API_KEY, http)
            receiver_url = f"{receiver_base}/whatsapp/webhook"
            yield Rig(fake, settings, client, receiver, api_url, receiver_url, http)
            await fake.aclose()


@pytest.fixture
def rig(running: Rig) -> Rig:
    running.fake.reset()
    running.settings.update(DEFAULTS)
    running.receiver.received.clear()
    running.receiver.status = 200
    running.receiver.respond = None
    running.fake.register_webhook(running.receiver_url, SECRET_HEADERS)
    return running


async def send_review_template(rig: Rig, to: str) -> str:
    sent = await rig.client.send_template(
        to=to, name="merchant_payment_review", language="en", body_params=REVIEW_PARAMS
    )
    return sent.message_id


# The customer window ------------------------------------------------------------------------


async def test_free_form_to_a_phone_that_never_wrote_fails_later_but_a_template_arrives(
    rig: Rig,
) -> None:
    free_form = await rig.client.send_text(to=CUSTOMER, body="Your receipt")
    template = await send_review_template(rig, CUSTOMER)

    # Accepted with a wamid first (the HTTP answer says nothing), failed by webhook later.
    assert free_form.message_id.startswith("wamid.")
    await rig.wait_statuses(free_form.message_id, FAILED_131047)
    await rig.wait_statuses(template, DELIVERED)
    first, second = rig.fake.inbox(CUSTOMER)
    assert (first["status"], first["error_code"]) == ("failed", 131047)
    assert (second["status"], second["error_code"]) == ("read", None)
    _, statuses = rig.events()
    failed = next(s for s in statuses if s.status == "failed")
    assert (failed.recipient, failed.error_title) == (CUSTOMER, "Re-engagement message")


async def test_after_the_phone_writes_free_form_is_delivered(rig: Rig) -> None:
    await rig.fake.phone_writes(CUSTOMER, text="hello")

    sent = await rig.client.send_text(to=CUSTOMER, body="Welcome back")

    await rig.wait_statuses(sent.message_id, DELIVERED)


async def test_the_window_closes_after_customer_window_s(rig: Rig) -> None:
    rig.configure(customer_window_s=60)
    rig.fake.set_last_inbound(CUSTOMER, utcnow() - timedelta(seconds=61))
    late = await rig.client.send_text(to=CUSTOMER, body="too late")
    rig.fake.set_last_inbound(CUSTOMER, utcnow() - timedelta(seconds=59))
    in_time = await rig.client.send_text(to=CUSTOMER, body="in time")

    await rig.wait_statuses(late.message_id, FAILED_131047)
    await rig.wait_statuses(in_time.message_id, DELIVERED)


async def test_set_last_inbound_needs_an_aware_time(rig: Rig) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rig.fake.set_last_inbound(CUSTOMER, datetime(2026, 1, 1))


# Statuses -------------------------------------------------------------------------------------


async def test_statuses_come_in_order_with_the_registered_headers(rig: Rig) -> None:
    rig.configure(status_delay_ms=20)

    wamid = await send_review_template(rig, MERCHANT)

    await rig.wait_statuses(wamid, DELIVERED)
    for request in rig.receiver.received:
        assert request.path == "/whatsapp/webhook"
        assert request.headers["x-webhook-secret"] == "s3cret"
        assert request.headers["content-type"] == "application/json"
        envelope = request.json()
        assert envelope["object"] == "whatsapp_business_account"
        assert envelope["entry"][0]["changes"][0]["field"] == "messages"
    _, statuses = rig.events()
    assert [s.recipient for s in statuses] == [MERCHANT] * 3
    assert statuses[0].timestamp <= statuses[-1].timestamp


async def test_reset_cancels_statuses_not_yet_posted(rig: Rig) -> None:
    rig.configure(status_delay_ms=200)
    await send_review_template(rig, MERCHANT)

    rig.fake.reset()
    await asyncio.sleep(0.4)

    assert rig.receiver.received == []
    assert rig.fake.inbox(MERCHANT) == []


# The phone writes -----------------------------------------------------------------------------


async def test_phone_writes_posts_an_envelope_the_product_parses(rig: Rig) -> None:
    rig.receiver.status = 503

    wamid, status = await rig.fake.phone_writes(CUSTOMER, text="unpaid")

    assert status == 503
    (message,), statuses = rig.events()
    assert statuses == []
    assert (message.wamid, message.sender, message.kind, message.text) == (
        wamid,
        CUSTOMER,
        "text",
        "unpaid",
    )
    assert message.contact_name
    assert rig.receiver.received[0].headers["x-webhook-secret"] == "s3cret"


async def test_a_reply_tap_carries_the_offered_title_and_context(rig: Rig) -> None:
    await rig.fake.phone_writes(CUSTOMER, text="hi")
    offer = await rig.client.send_buttons(
        to=CUSTOMER, body="Pay?", buttons=[("pay:INV1", "Pay with M-PESA"), ("no", "Not now")]
    )
    await rig.wait_statuses(offer.message_id, DELIVERED)
    rig.receiver.received.clear()

    wamid, status = await rig.fake.phone_writes(CUSTOMER, button_id="pay:INV1")

    assert status == 200
    (tap,), _ = rig.events()
    assert (tap.wamid, tap.kind, tap.button_id, tap.text) == (
        wamid,
        "button",
        "pay:INV1",
        "Pay with M-PESA",
    )
    raw = rig.receiver.received[0].json()["entry"][0]["changes"][0]["value"]["messages"][0]
    assert raw["type"] == "interactive"
    assert raw["context"]["id"] == offer.message_id


async def test_a_template_quick_reply_tap_carries_the_payload(rig: Rig) -> None:
    params = ["Wanjiku Designs", "INV7K3QX9A", "KES 1,500", "https://x.test/i/t"]
    reminder = await rig.client.send_template(
        to=CUSTOMER,
        name="invoice_reminder",
        language="en",
        body_params=params,
        button_payloads=["pay:INV7K3QX9A"],
    )
    await rig.wait_statuses(reminder.message_id, DELIVERED)
    rig.receiver.received.clear()

    await rig.fake.phone_writes(CUSTOMER, button_id="pay:INV7K3QX9A", kind="template")

    (tap,), _ = rig.events()
    assert (tap.kind, tap.button_id, tap.text, tap.raw_type) == (
        "button",
        "pay:INV7K3QX9A",
        "Pay with M-PESA",
        "button",
    )


async def test_a_tap_counts_as_writing(rig: Rig) -> None:
    await send_review_template(rig, MERCHANT)
    await rig.fake.phone_writes(MERCHANT, button_id="Pay with M-PESA", kind="template")

    sent = await rig.client.send_text(to=MERCHANT, body="Here are the details")

    await rig.wait_statuses(sent.message_id, DELIVERED)


async def test_raw_messages_cover_other_types_and_user_id_only_senders(rig: Rig) -> None:
    await rig.fake.phone_writes(
        CUSTOMER, raw={"from_user_id": "KE.1349120865", "type": "text", "text": {"body": "hi"}}
    )
    await rig.fake.phone_writes(CUSTOMER, raw={"type": "image", "image": {"id": "77"}})

    (bsuid, image), _ = rig.events()
    assert (bsuid.sender, bsuid.user_id, bsuid.kind) == (None, "KE.1349120865", "text")
    assert (image.sender, image.kind, image.raw_type) == (CUSTOMER, "unsupported", "image")


async def test_phone_writes_checks_its_arguments_and_the_registration(rig: Rig) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await rig.fake.phone_writes(CUSTOMER, text="a", button_id="b")
    with pytest.raises(ValueError, match="digits"):
        await rig.fake.phone_writes("+254 712", text="a")
    unregistered = WhatsAppFake(SimulatorSettings(), {}, api_key=API_KEY, http=rig.http)
    with pytest.raises(WebhookNotRegistered):
        await unregistered.phone_writes(CUSTOMER, text="a")


async def test_an_unreachable_app_is_reported_as_no_answer(rig: Rig) -> None:
    rig.fake.register_webhook(closed_port_url() + "/whatsapp/webhook", SECRET_HEADERS)

    _, status = await rig.fake.phone_writes(CUSTOMER, text="hello")

    assert status == NO_ANSWER


async def test_the_mark_read_shows_on_the_inbound_message(rig: Rig) -> None:
    wamid, _ = await rig.fake.phone_writes(CUSTOMER, text="hello")
    assert not rig.fake.is_read(wamid)

    await rig.client.mark_read(message_id=wamid)

    assert rig.fake.is_read(wamid)


# Inbox ----------------------------------------------------------------------------------------


async def test_inbox_lists_oldest_first_after_a_wamid(rig: Rig) -> None:
    ids = [await send_review_template(rig, MERCHANT) for _ in range(3)]

    assert [i["wamid"] for i in rig.fake.inbox(MERCHANT)] == ids
    assert [i["wamid"] for i in rig.fake.inbox(MERCHANT, after=ids[0])] == ids[1:]
    assert rig.fake.inbox(MERCHANT, after=ids[2]) == []
    assert len(rig.fake.inbox(MERCHANT, after="wamid.unknown")) == 3
    item = rig.fake.inbox(MERCHANT)[0]
    assert set(item) == {
        "wamid",
        "type",
        "text",
        "buttons",
        "template",
        "status",
        "error_code",
        "at",
        "payload",
        "fault",
    }
    assert item["fault"] is None
    assert datetime.fromisoformat(item["at"]).tzinfo is not None
    assert rig.fake.inbox("254700999999") == []


async def test_concurrent_sends_are_all_recorded(rig: Rig) -> None:
    sends = [send_review_template(rig, MERCHANT) for _ in range(25)]

    ids = await asyncio.gather(*sends)

    assert len(set(ids)) == 25
    assert {i["wamid"] for i in rig.fake.inbox(MERCHANT)} == set(ids)
    await rig.receiver.wait_for(lambda received: len(received) == 75)


# Payload rules, checked on raw requests (the client refuses most of these itself) -------------


def _buttons(count: int, title: str = "Pay") -> dict[str, Any]:
    buttons = [
        {"type": "reply", "reply": {"id": f"b{i}", "title": f"{title}{i}"}} for i in range(count)
    ]
    return {"type": "button", "body": {"text": "Pay?"}, "action": {"buttons": buttons}}


def _template(name: str, params: list[str], language: str = "en") -> dict[str, Any]:
    parameters = [{"type": "text", "text": p} for p in params]
    return {
        "name": name,
        "language": {"code": language},
        "components": [{"type": "body", "parameters": parameters}],
    }


def _message(kind: str, content: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "type": kind,
        kind: content,
        **overrides,
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_message("text", {"body": "hi"}, messaging_product=None), 100),
        (_message("text", {"body": "hi"}, to="not-a-number"), 100),
        (_message("sticker", {"id": "1"}), 100),
        (_message("text", {"body": "x" * 4097}), 131009),
        (_message("text", {}), 131008),
        (_message("interactive", _buttons(4)), 131009),
        (_message("interactive", _buttons(0)), 131009),
        (_message("interactive", _buttons(1, title="x" * 20)), 131009),
        (_message("interactive", {**_buttons(1), "body": {"text": "x" * 1025}}), 131009),
        (_message("interactive", {**_buttons(1), "type": "list"}), 100),
        (_message("template", _template("nope", [])), 132001),
        (_message("template", _template("merchant_payment_review", REVIEW_PARAMS, "sw")), 132001),
        (_message("template", _template("merchant_payment_review", ["a", "b"])), 132000),
        (_message("template", _template("merchant_payment_review", ["a", "b", "c\nd"])), 131009),
        (_message("template", _template("merchant_payment_review", ["a", "b", ""])), 131008),
        (_message("document", {"id": "404", "filename": "x.pdf"}), 131009),
    ],
)
async def test_payloads_whatsapp_refuses_get_a_cloud_api_error(
    rig: Rig, body: dict[str, Any], code: int
) -> None:
    response = await rig.http.post(
        rig.api_url + "/messages", json=body, headers={"D360-API-KEY": API_KEY}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith(f"(#{code})")
    assert rig.fake.inbox(CUSTOMER) == []


async def test_a_template_quick_reply_must_exist_on_the_template(rig: Rig) -> None:
    template = _template("merchant_payment_review", REVIEW_PARAMS)
    template["components"].append(
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "x"}],
        }
    )

    response = await rig.http.post(
        rig.api_url + "/messages",
        json=_message("template", template),
        headers={"D360-API-KEY": API_KEY},
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, 131009)


@pytest.mark.parametrize("path", ["/messages", "/media", "/v1/configs/webhook"])
async def test_a_missing_key_gets_360dialogs_401(rig: Rig, path: str) -> None:
    response = await rig.http.post(rig.api_url + path, json={})

    assert response.status_code == 401
    assert response.json() == {
        "meta": {"success": False, "httpCode": 401, "developerMessage": "Invalid api_key"}
    }


async def test_media_upload_needs_the_messaging_product_and_a_file(rig: Rig) -> None:
    headers = {"D360-API-KEY": API_KEY}
    files = {"file": ("a.pdf", b"%PDF", "application/pdf")}

    without_product = await rig.http.post(rig.api_url + "/media", files=files, headers=headers)
    without_file = await rig.http.post(
        rig.api_url + "/media", data={"messaging_product": "whatsapp"}, headers=headers
    )

    assert [r.json()["error"]["code"] for r in (without_product, without_file)] == [100, 100]


async def test_webhook_registration_is_validated(rig: Rig) -> None:
    headers = {"D360-API-KEY": API_KEY}

    bad_url = await rig.http.post(
        rig.api_url + "/v1/configs/webhook", json={"url": "ftp://x"}, headers=headers
    )
    bad_headers = await rig.http.post(
        rig.api_url + "/v1/configs/webhook",
        json={"url": "https://x.test/hook", "headers": {"X": 1}},
        headers=headers,
    )

    assert (bad_url.status_code, bad_headers.status_code) == (400, 400)
    assert rig.fake.webhook_url == rig.receiver_url


# Faults ---------------------------------------------------------------------------------------


def _with_faults(rig: Rig, seed: int, **whatsapp: float) -> None:
    faults = DEFAULTS.faults.model_copy(deep=True)
    for name, chance in whatsapp.items():
        setattr(faults.whatsapp, name, chance)
    rig.settings.update(DEFAULTS.model_copy(update={"seed": seed, "faults": faults}))


async def _outcomes(rig: Rig, count: int) -> list[str]:
    outcomes = []
    for _ in range(count):
        try:
            await send_review_template(rig, MERCHANT)
            outcomes.append("ok")
        except WhatsAppError as error:
            outcomes.append(f"{error.kind}:{error.http_status}")
    return outcomes


async def test_seeded_faults_repeat_with_the_same_seed(rig: Rig) -> None:
    _with_faults(rig, 7, error_5xx=0.4, error_429=0.2)
    first = await _outcomes(rig, 20)
    _with_faults(rig, 7, error_5xx=0.4, error_429=0.2)
    second = await _outcomes(rig, 20)

    assert first == second
    assert {"ok", "transient:500", "transient:429"} <= set(first)
    assert len(rig.fake.inbox(MERCHANT)) == 2 * first.count("ok")


async def test_a_timeout_after_sending_delivers_and_marks_the_copy(rig: Rig) -> None:
    # The client's read timeout (2 s) outlasts the hold here, so the late answer still comes.
    _with_faults(rig, 1, timeout_after=1.0)
    wamid = await send_review_template(rig, MERCHANT)

    [item] = rig.fake.inbox(MERCHANT)
    assert (item["wamid"], item["fault"]) == (wamid, "timeout_after")


async def test_a_status_the_app_did_not_take_is_posted_again(rig: Rig) -> None:
    refused: list[str] = []

    def answer(item: Received) -> int:
        # The app is down for the first two posts of the "sent" status.
        statuses = item.json()["entry"][0]["changes"][0]["value"].get("statuses", [])
        if statuses and statuses[0]["status"] == "sent" and len(refused) < 2:
            refused.append("sent")
            return 503
        return 200

    rig.receiver.respond = answer
    wamid = await send_review_template(rig, MERCHANT)

    await rig.receiver.wait_for(lambda _: [s for s, _ in rig.statuses(wamid)][-1:] == ["read"])
    assert [s for s, _ in rig.statuses(wamid)] == ["sent", "sent", "sent", "delivered", "read"]


async def test_duplicate_webhooks_post_the_same_envelope_twice(rig: Rig) -> None:
    faults = DEFAULTS.faults.model_copy(update={"webhooks": WebhookFaults(duplicate=1.0)})
    rig.settings.update(DEFAULTS.model_copy(update={"faults": faults}))

    wamid, _ = await rig.fake.phone_writes(CUSTOMER, text="hello")

    first, second = rig.receiver.received
    assert first.body == second.body
    messages, _ = rig.events()
    assert [m.wamid for m in messages] == [wamid, wamid]
    sent = await send_review_template(rig, CUSTOMER)
    await rig.receiver.wait_for(lambda received: len(_status_posts(received)) == 6)
    assert rig.statuses(sent) == [s for s in DELIVERED for _ in range(2)]


def _status_posts(received: list[Received]) -> list[Received]:
    return [r for r in received if b'"statuses"' in r.body]
