"""WhatsAppClient over real HTTP against the simulator's 360dialog fake (and a few bare servers
for the error shapes the fake does not produce).

Timeout classification, decided here and in `whatsapp/errors.py`: a request that failed at
connect never reached 360dialog, so it is transient; once the request may have left (read or
write timeout, connection dropped) the client cannot know whether the message was taken, so it is
ambiguous — the fake's `timeout_before` (nothing recorded) and `timeout_after` (recorded) look the
same from the client and both come out ambiguous.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Response

from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.simulator.config import SimulatorConfig, SimulatorSettings
from invoiceiq.whatsapp.client import DocumentHeader, WhatsAppClient
from invoiceiq.whatsapp.errors import WhatsAppError
from invoiceiq.whatsapp.simulator import WhatsAppFake
from invoiceiq.whatsapp.templates import load_templates
from support.servers import Recorder, closed_port_url, serve_app

API_KEY = "test-d360-key"
PHONE = "254712345678"
CONTRACTS = Path(__file__).resolve().parent.parent / "contracts" / "whatsapp"
FAST = Timeouts(connect=1.0, read=2.0, write=2.0, pool=1.0)
DEFAULTS = SimulatorConfig(timeout_hold_s=0.6, status_delay_ms=0)

# The servers start once per module (uvicorn takes ~0.2 s to stop); each test starts from a
# reset fake, default config and an empty receiver.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Rig:
    fake: WhatsAppFake
    settings: SimulatorSettings
    client: WhatsAppClient
    receiver: Recorder
    api_url: str
    http: httpx.AsyncClient

    def configure(self, **changes: Any) -> None:
        self.settings.update(self.settings.config.model_copy(update=changes))

    def faults(self, **whatsapp: float) -> None:
        faults = self.settings.config.faults.model_copy(deep=True)
        for name, chance in whatsapp.items():
            setattr(faults.whatsapp, name, chance)
        self.configure(faults=faults)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running() -> AsyncIterator[tuple[Rig, str]]:
    settings = SimulatorSettings(DEFAULTS)
    async with make_http_client(FAST) as http:
        fake = WhatsAppFake(settings, load_templates(), api_key=API_KEY, http=http)
        app = FastAPI()
        app.include_router(fake.router, prefix="/simulator/whatsapp")
        receiver = Recorder()
        async with serve_app(app) as base, serve_app(receiver.app()) as receiver_base:
            api_url = base + "/simulator/whatsapp"
            client = WhatsAppClient(api_url, API_KEY, http)
            yield Rig(fake, settings, client, receiver, api_url, http), receiver_base
            await fake.aclose()


@pytest.fixture
def rig(running: tuple[Rig, str]) -> Rig:
    rig, receiver_base = running
    rig.fake.reset()
    rig.settings.update(DEFAULTS)
    rig.receiver.received.clear()
    rig.fake.register_webhook(f"{receiver_base}/whatsapp/webhook", {"X-Webhook-Secret": "s"})
    return rig


def statuses_for(receiver: Recorder, wamid: str) -> list[str]:
    found = []
    for request in receiver.received:
        for entry in request.json()["entry"]:
            for change in entry["changes"]:
                found += [
                    s["status"] for s in change["value"].get("statuses", []) if s["id"] == wamid
                ]
    return found


async def wait_statuses(rig: Rig, wamid: str, expected: list[str]) -> None:
    await rig.receiver.wait_for(lambda _: statuses_for(rig.receiver, wamid) == expected)


# Happy paths --------------------------------------------------------------------------------


async def test_send_text_inside_the_window_is_delivered(rig: Rig) -> None:
    rig.fake.set_last_inbound(PHONE, utcnow() - timedelta(minutes=5))

    sent = await rig.client.send_text(to=PHONE, body="Your invoice is ready")

    await wait_statuses(rig, sent.message_id, ["sent", "delivered", "read"])
    (item,) = rig.fake.inbox(PHONE)
    assert (item["wamid"], item["type"], item["text"]) == (
        sent.message_id,
        "text",
        "Your invoice is ready",
    )
    assert item["status"] == "read"
    assert item["payload"]["recipient_type"] == "individual"
    assert item["payload"]["text"] == {"body": "Your invoice is ready", "preview_url": False}


async def test_send_buttons_shows_them_on_the_phone(rig: Rig) -> None:
    rig.fake.set_last_inbound(PHONE, utcnow())

    sent = await rig.client.send_buttons(
        to=PHONE,
        body="Invoice INV7K3QX9A, KES 1,500",
        buttons=[("pay:INV7K3QX9A", "Pay with M-PESA"), ("view:INV7K3QX9A", "View invoice")],
        header="Wanjiku Designs",
        footer="Reply to pay",
    )

    (item,) = rig.fake.inbox(PHONE)
    assert item["wamid"] == sent.message_id
    assert item["buttons"] == [
        {"id": "pay:INV7K3QX9A", "title": "Pay with M-PESA"},
        {"id": "view:INV7K3QX9A", "title": "View invoice"},
    ]
    assert item["payload"]["interactive"]["footer"] == {"text": "Reply to pay"}


async def test_send_template_is_rendered_and_carries_the_pay_payload(rig: Rig) -> None:
    params = ["Wanjiku Designs", "INV7K3QX9A", "KES 1,500", "Logo design", "https://x.test/i/t"]

    sent = await rig.client.send_template(
        to=PHONE,
        name="invoice_new",
        language="en",
        body_params=params,
        button_payloads=["pay:INV7K3QX9A"],
    )

    await wait_statuses(rig, sent.message_id, ["sent", "delivered", "read"])
    (item,) = rig.fake.inbox(PHONE)
    assert item["type"] == "template"
    assert item["text"] == load_templates()["invoice_new"].render(params)
    assert item["template"] == {"name": "invoice_new", "params": params}
    assert item["buttons"] == [{"id": "pay:INV7K3QX9A", "title": "Pay with M-PESA"}]
    button = item["payload"]["template"]["components"][1]
    assert button == {
        "type": "button",
        "sub_type": "quick_reply",
        "index": "0",
        "parameters": [{"type": "payload", "payload": "pay:INV7K3QX9A"}],
    }


async def test_upload_then_send_a_document(rig: Rig) -> None:
    rig.fake.set_last_inbound(PHONE, utcnow())
    pdf = b"%PDF-1.7 invoice"

    media_id = await rig.client.upload_media(
        content=pdf, mime_type="application/pdf", filename="INV7K3QX9A.pdf"
    )
    sent = await rig.client.send_document(
        to=PHONE, media_id=media_id, filename="INV7K3QX9A.pdf", caption="Invoice INV7K3QX9A"
    )
    with_header = await rig.client.send_buttons(
        to=PHONE,
        body="Pay now?",
        buttons=[("pay:INV7K3QX9A", "Pay with M-PESA")],
        header=DocumentHeader(media_id=media_id, filename="INV7K3QX9A.pdf"),
    )

    stored = rig.fake.media(media_id)
    assert stored is not None
    assert (stored.content, stored.mime_type, stored.filename) == (
        pdf,
        "application/pdf",
        "INV7K3QX9A.pdf",
    )
    first, second = rig.fake.inbox(PHONE)
    assert (first["wamid"], first["type"], first["text"]) == (
        sent.message_id,
        "document",
        "Invoice INV7K3QX9A",
    )
    assert second["wamid"] == with_header.message_id


async def test_mark_read_reaches_the_fake(rig: Rig) -> None:
    wamid, _ = await rig.fake.phone_writes(PHONE, text="hello")

    await rig.client.mark_read(message_id=wamid)

    assert rig.fake.is_read(wamid)


async def test_register_webhook_through_the_client(rig: Rig) -> None:
    other = Recorder()
    async with serve_app(other.app()) as other_base:
        url = f"{other_base}/whatsapp/webhook"

        await rig.client.register_webhook(url=url, headers={"X-Webhook-Secret": "rotated"})
        wamid, status = await rig.fake.phone_writes(PHONE, text="hi")

    assert rig.fake.webhook_url == url
    assert status == 200
    (request,) = other.received
    assert request.headers["x-webhook-secret"] == "rotated"
    assert request.json()["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == wamid


# Refused before any HTTP call -----------------------------------------------------------------

BUTTON = ("pay:INV1", "Pay with M-PESA")


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"buttons": [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]}, "1 to 3, got 4"),
        ({"buttons": []}, "1 to 3, got 0"),
        ({"buttons": [("pay", "x" * 21)]}, "title must be 1 to 20"),
        ({"buttons": [("x" * 257, "Pay")]}, "id must be 1 to 256"),
        ({"buttons": [("same", "One"), ("same", "Two")]}, "ids must be unique"),
        ({"buttons": [("one", "Same"), ("two", "Same")]}, "titles must be unique"),
        ({"body": "x" * 1025}, "longer than 1024"),
        ({"body": "   "}, "must not be empty"),
        ({"footer": "x" * 61}, "footer longer than 60"),
        ({"to": "0712 345 678"}, "recipient must be a wa_id"),
    ],
)
async def test_invalid_button_messages_never_leave_the_client(
    rig: Rig, arguments: dict[str, Any], reason: str
) -> None:
    call: dict[str, Any] = {"to": PHONE, "body": "Pay?", "buttons": [BUTTON], **arguments}

    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_buttons(**call)

    assert caught.value.kind == "rejected"
    assert reason in caught.value.title
    assert caught.value.http_status is None
    assert rig.fake.request_count == 0
    assert rig.fake.inbox(PHONE) == []


@pytest.mark.parametrize("param", ["Logo\ndesign", "tab\there", "five     spaces", " "])
async def test_template_parameters_meta_refuses_never_leave_the_client(
    rig: Rig, param: str
) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_template(
            to=PHONE, name="merchant_payment_review", language="en", body_params=["a", "b", param]
        )

    assert caught.value.kind == "rejected"
    assert rig.fake.request_count == 0


async def test_an_oversized_text_never_leaves_the_client(rig: Rig) -> None:
    with pytest.raises(WhatsAppError, match="longer than 4096"):
        await rig.client.send_text(to=PHONE, body="x" * 4097)

    assert rig.fake.request_count == 0


async def test_error_titles_never_carry_the_body_or_phone(rig: Rig) -> None:
    secret_body = "Jane owes 1500 for the secret cake"
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_buttons(to=PHONE, body=secret_body, buttons=[("p", "x" * 30)])

    assert secret_body not in str(caught.value)
    assert PHONE not in str(caught.value)


# Refused by the provider ----------------------------------------------------------------------


async def test_a_wrong_api_key_is_rejected(rig: Rig) -> None:
    client = WhatsAppClient(rig.api_url, "wrong-key", rig.http)

    with pytest.raises(WhatsAppError) as caught:
        await client.send_text(to=PHONE, body="hello")

    assert (caught.value.kind, caught.value.http_status, caught.value.code) == (
        "rejected",
        401,
        None,
    )
    assert "Invalid api_key" in caught.value.title
    assert rig.fake.inbox(PHONE) == []


async def test_an_unknown_template_is_rejected_with_its_code(rig: Rig) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_template(
            to=PHONE, name="no_such_template", language="en", body_params=["a"]
        )

    assert (caught.value.kind, caught.value.code, caught.value.http_status) == (
        "rejected",
        132001,
        400,
    )


async def test_a_template_in_another_language_is_rejected(rig: Rig) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_template(
            to=PHONE, name="merchant_payment_review", language="sw", body_params=["a", "b", "c"]
        )

    assert caught.value.code == 132001


async def test_a_wrong_parameter_count_is_rejected_with_its_code(rig: Rig) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_template(
            to=PHONE, name="invoice_new", language="en", body_params=["only", "two"]
        )

    assert (caught.value.kind, caught.value.code) == ("rejected", 132000)
    assert caught.value.details is not None and "(2)" in caught.value.details
    assert rig.fake.inbox(PHONE) == []


async def test_a_document_with_an_unknown_media_id_is_rejected(rig: Rig) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_document(to=PHONE, media_id="404", filename="x.pdf")

    assert (caught.value.kind, caught.value.code) == ("rejected", 131009)


async def test_mark_read_of_an_unknown_message_is_rejected(rig: Rig) -> None:
    with pytest.raises(WhatsAppError) as caught:
        await rig.client.mark_read(message_id="wamid.unknown")

    assert (caught.value.kind, caught.value.code) == ("rejected", 100)


# Faults -------------------------------------------------------------------------------------


async def test_429_is_transient(rig: Rig) -> None:
    rig.faults(error_429=1.0)

    with pytest.raises(WhatsAppError) as caught:
        await rig.client.send_text(to=PHONE, body="hello")

    assert (caught.value.kind, caught.value.code, caught.value.http_status) == (
        "transient",
        130429,
        429,
    )
    assert rig.fake.inbox(PHONE) == []


async def test_5xx_is_transient(rig: Rig) -> None:
    rig.faults(error_5xx=1.0)

    with pytest.raises(WhatsAppError) as caught:
        await rig.client.upload_media(content=b"x", mime_type="application/pdf", filename="a.pdf")

    assert (caught.value.kind, caught.value.http_status) == ("transient", 500)


async def test_timeout_before_is_ambiguous_and_nothing_was_recorded(rig: Rig) -> None:
    rig.faults(timeout_before=1.0)
    async with make_http_client(Timeouts(connect=1.0, read=0.2, write=1.0, pool=1.0)) as http:
        client = WhatsAppClient(rig.api_url, API_KEY, http)

        with pytest.raises(WhatsAppError) as caught:
            await client.send_template(
                to=PHONE, name="merchant_payment_review", language="en", body_params=["a", "b", "c"]
            )

    assert caught.value.kind == "ambiguous"
    assert "ReadTimeout" in caught.value.title
    assert rig.fake.inbox(PHONE) == []


async def test_timeout_after_is_ambiguous_and_the_message_went_out(rig: Rig) -> None:
    rig.faults(timeout_after=1.0)
    async with make_http_client(Timeouts(connect=1.0, read=0.2, write=1.0, pool=1.0)) as http:
        client = WhatsAppClient(rig.api_url, API_KEY, http)

        with pytest.raises(WhatsAppError) as caught:
            await client.send_template(
                to=PHONE, name="merchant_payment_review", language="en", body_params=["a", "b", "c"]
            )

    assert caught.value.kind == "ambiguous"
    (item,) = rig.fake.inbox(PHONE)
    await wait_statuses(rig, item["wamid"], ["sent", "delivered", "read"])


async def test_a_refused_connection_is_transient() -> None:
    async with make_http_client(FAST) as http:
        client = WhatsAppClient(closed_port_url(), API_KEY, http)

        with pytest.raises(WhatsAppError) as caught:
            await client.send_text(to=PHONE, body="hello")

    assert caught.value.kind == "transient"
    assert "ConnectError" in caught.value.title


# Every error shape, answered by a bare server -------------------------------------------------


def _sample(name: str) -> bytes:
    document = json.loads((CONTRACTS / name).read_text(encoding="utf-8"))
    document.pop("_source")
    return json.dumps(document).encode()


@dataclass
class Canned:
    base_url: str
    answer: Response


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def canned() -> AsyncIterator[Canned]:
    """A bare server answering whatever the test puts in `answer`."""
    app = FastAPI()
    state = Canned(base_url="", answer=Response(status_code=500))

    @app.post("/messages")
    async def answer() -> Response:
        return state.answer

    async with serve_app(app) as base:
        state.base_url = base
        yield state


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, _sample("error_graph.json"), ("rejected", 131030, "(#131030) Recipient phone")),
        (401, _sample("error_gateway.json"), ("rejected", None, "Invalid api_key")),
        (400, _sample("error_string.json"), ("rejected", None, "Webhook url is not reachable")),
        (502, b"<html><body>Bad gateway</body></html>", ("transient", None, "HTTP 502")),
        (503, b"", ("transient", None, "HTTP 503")),
        (404, b"not json", ("rejected", None, "HTTP 404")),
        (
            400,
            b'{"meta": {"httpCode": 400, "developerMessage": "You have exceeded the endpoint rate'
            b' limit", "success": false}}',
            ("transient", None, "exceeded the endpoint rate limit"),
        ),
        (
            400,
            b'{"error": {"message": "(#131056) Pair rate limit hit", "code": 131056}}',
            ("transient", 131056, "Pair rate limit"),
        ),
        (
            400,
            b'{"error": {"message": "(#131026) Undeliverable to +254712345678", "code": 131026}}',
            ("rejected", 131026, "Undeliverable to •••"),
        ),
        (200, b'{"messaging_product": "whatsapp", "messages": []}', ("ambiguous", None, "id")),
        (200, b"<html>ok</html>", ("ambiguous", None, "id")),
    ],
)
async def test_error_shapes_are_parsed_and_classified(
    canned: Canned, status: int, body: bytes, expected: tuple[str, int | None, str]
) -> None:
    canned.answer = Response(content=body, status_code=status, media_type="application/json")

    async with make_http_client(FAST) as http:
        with pytest.raises(WhatsAppError) as caught:
            await WhatsAppClient(canned.base_url, API_KEY, http).send_text(to=PHONE, body="hello")

    kind, code, title = expected
    assert (caught.value.kind, caught.value.code) == (kind, code)
    assert title in caught.value.title
    assert PHONE not in str(caught.value)
