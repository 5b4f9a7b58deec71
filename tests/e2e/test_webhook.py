"""POST /whatsapp/webhook and its handshake, end to end over real HTTP (DESIGN §3, §7).

Who may post, what a bad body gets (never a 500), duplicates and batches, statuses that race
or arrive out of order, senders without a phone number, and an answer that never waits on a
provider call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.db.models import InboxEvent, Invoice, MessageLog, OutboxMessage
from invoiceiq.db.uow import unit_of_work
from invoiceiq.notifications.models import DeliveryStatus, Direction
from invoiceiq.outbox.states import OutboxStatus
from payments.flows import drained
from support.app_server import Phone, RunningApp, rows, running_app, texts_of
from support.webhooks import SECRET_HEADERS, envelope, post, signature, status, text_message

MERCHANT = "254700000001"
OTHER_MERCHANT = "254700000002"
CUSTOMER = "254712345678"
OTHER_CUSTOMER = "254712345679"
INVOICE_NUMBER = re.compile(r"INV[0-9A-Z]{7}")


async def named_merchant(app: RunningApp, phone: str = MERCHANT, name: str = "Wanjiku") -> Phone:
    merchant = app.phone(phone)
    await merchant.say(f"name {name}")
    assert name in (await merchant.next_reply())["text"]
    return merchant


async def quiet(seconds: float = 0.4) -> None:
    """Give a wrongly repeated message time to show up before counting."""
    await asyncio.sleep(seconds)


# Who may post ---------------------------------------------------------------------------------


async def test_handshake_echoes_the_challenge_only_for_the_verify_token(database_url: str) -> None:
    async with running_app(database_url, whatsapp_verify_token="tok-123") as app:

        async def handshake(**params: str) -> Any:
            return await app.http.get("/whatsapp/webhook", params=params)

        good = await handshake(
            **{"hub.mode": "subscribe", "hub.verify_token": "tok-123", "hub.challenge": "987"}
        )
        assert good.status_code == 200 and good.text == "987"
        refused = [
            {"hub.mode": "subscribe", "hub.verify_token": "tok-124", "hub.challenge": "1"},
            {"hub.mode": "subscribe", "hub.verify_token": "tok-12", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": "tok-123", "hub.challenge": "1"},
            {"hub.verify_token": "tok-123", "hub.challenge": "1"},
            {"hub.mode": "subscribe", "hub.challenge": "1"},
            {},
        ]
        for params in refused:
            response = await handshake(**params)
            assert response.status_code == 403, params
            assert response.text != "1"


async def test_post_needs_the_secret_header(database_url: str) -> None:
    body = envelope(messages=[text_message(CUSTOMER, "hello")])
    async with running_app(database_url) as app:
        missing = await post(app, body, headers={})
        wrong_same_length = await post(
            app, body, headers={"X-Webhook-Secret": "dev-webhook-secreT"}
        )
        wrong_shorter = await post(app, body, headers={"X-Webhook-Secret": "dev"})
        empty = await post(app, body, headers={"X-Webhook-Secret": ""})
        await quiet(0.2)
        assert await app.phone(CUSTOMER).inbox() == []
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    for refused in (wrong_same_length, wrong_shorter, empty):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert await rows(database_url, InboxEvent) == []


async def test_with_an_app_secret_the_body_signature_is_checked_too(database_url: str) -> None:
    document = envelope(messages=[text_message(CUSTOMER, "hello")])
    body = json.dumps(document).encode()
    good = signature(body, "meta-app-secret")
    secret = {"X-Webhook-Secret": "dev-webhook-secret"}
    async with running_app(database_url, whatsapp_app_secret="meta-app-secret") as app:
        no_signature = await post(app, body)
        bad_signature = await post(
            app, body, headers={**secret, "X-Hub-Signature-256": "sha256=00"}
        )
        other_key = await post(
            app, body, headers={**secret, "X-Hub-Signature-256": signature(body, "other")}
        )
        # The signature covers the exact bytes: the same JSON re-encoded does not pass.
        altered = body.replace(b"hello", b"hellO")
        tampered = await post(app, altered, headers={**secret, "X-Hub-Signature-256": good})
        wrong_secret = await post(
            app, body, headers={"X-Webhook-Secret": "wrong", "X-Hub-Signature-256": good}
        )
        unsigned_without_secret = await post(app, body, headers={})
        assert await rows(database_url, InboxEvent) == []
        accepted = await post(app, body, headers={**secret, "X-Hub-Signature-256": good})
        welcome = (await app.phone(CUSTOMER).wait_for_count(1))[0]
        # Meta, posting directly, signs but cannot send our header: the signature suffices.
        again = json.dumps(envelope(messages=[text_message(CUSTOMER, "hi")])).encode()
        from_meta = await post(
            app, again, headers={"X-Hub-Signature-256": signature(again, "meta-app-secret")}
        )
        await app.phone(CUSTOMER).wait_for_count(2)
    for refused in (no_signature, bad_signature, other_key, tampered, wrong_secret):
        assert refused.status_code == 403, refused.text
    assert unsigned_without_secret.status_code == 403
    assert accepted.status_code == 200 and from_meta.status_code == 200
    assert "name" in welcome["text"]


# Bad bodies -----------------------------------------------------------------------------------


async def test_malformed_json_is_a_400_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="invoiceiq.whatsapp.callbacks")
    async with running_app(database_url) as app:
        answers = {
            raw: await post(app, raw)
            for raw in (b"{not json", b"", b"\xff\xfe\x00", b'{"entry": [', b"[" * 100_000)
        }
    for raw, response in answers.items():
        assert response.status_code == 400, (raw[:20], response.status_code)
        assert response.json()["error"]["code"] == "malformed_json"
    logged = [r for r in caplog.records if "malformed JSON" in r.getMessage()]
    assert len(logged) == len(answers)
    assert await rows(database_url, InboxEvent) == []


NOT_UNDERSTOOD: list[Any] = [
    {},
    [],
    42,
    "text",
    None,
    {"object": "whatsapp_business_account"},
    {"object": "whatsapp_business_account", "entry": "not a list"},
    {"entry": [{"changes": [{"field": "account_update", "value": {"event": "x"}}]}]},
    {"entry": [{"changes": [{"field": "messages", "value": {"messages": [{"no": "id"}]}}]}]},
    {"entry": [{"changes": [{"value": {"statuses": [{"id": "w", "status": "sent"}]}}]}]},
]


async def test_an_envelope_with_nothing_we_understand_is_a_200_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="invoiceiq.whatsapp")
    async with running_app(database_url) as app:
        for document in NOT_UNDERSTOOD:
            caplog.clear()
            response = await post(app, json.dumps(document).encode())
            assert response.status_code == 200, (document, response.text)
            assert any("whatsapp webhook" in r.getMessage() for r in caplog.records), document
    assert await rows(database_url, InboxEvent) == []


async def test_ids_and_senders_that_are_not_whatsapp_ones_are_not_a_500(database_url: str) -> None:
    long_id = "wamid." + "A" * 400
    messages = [
        text_message(CUSTOMER, "hello", wamid=long_id),
        text_message("1" * 40, "hello"),  # longer than any E.164 number
        {**text_message(CUSTOMER, "hi"), "timestamp": "99999999999999999"},
        {**text_message(CUSTOMER, "hi"), "timestamp": "0001-01-01T00:00:00+05:00"},
        text_message(CUSTOMER, "nul \u0000 and a lone surrogate \ud800"),
    ]
    statuses = [
        status("w" * 300, "read", recipient=CUSTOMER),
        status("w1", "x" * 300, recipient="1"),
    ]
    async with running_app(database_url) as app:
        for item in messages:
            response = await post(app, envelope(messages=[item]))
            assert response.status_code == 200, (item["id"][:20], response.text)
        for item in statuses:
            response = await post(app, envelope(statuses=[item]))
            assert response.status_code == 200, response.text
        assert (await post(app, envelope(messages=messages, statuses=statuses))).status_code == 200


# Duplicates and batches -------------------------------------------------------------------------


async def test_the_same_webhook_posted_three_times_makes_one_invoice(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        document = envelope(messages=[text_message(MERCHANT, "invoice 0712345678 1500 Logo")])
        answers = await asyncio.gather(*(post(app, document) for _ in range(2)))
        answers.append(await post(app, document))
        await customer.wait_for_count(1)
        await merchant.wait_for_count(2)
        await quiet()
        customer_messages, merchant_messages = await customer.inbox(), await merchant.inbox()
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len(customer_messages) == 1 and len(merchant_messages) == 2
    assert len(await rows(database_url, Invoice)) == 1
    wamid = document["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    assert len(await rows(database_url, InboxEvent, InboxEvent.external_id == wamid)) == 1


async def test_one_post_with_two_merchants_handles_both(database_url: str) -> None:
    async with running_app(database_url) as app:
        first = await named_merchant(app, MERCHANT, "First Shop")
        second = await named_merchant(app, OTHER_MERCHANT, "Second Shop")
        document = envelope(
            messages=[
                text_message(MERCHANT, "invoice 0712345678 100 Tea"),
                text_message(OTHER_MERCHANT, "invoice 0712345679 200 Coffee"),
            ]
        )
        assert (await post(app, document)).status_code == 200
        [to_first] = await app.phone(CUSTOMER).wait_for_count(1)
        [to_second] = await app.phone(OTHER_CUSTOMER).wait_for_count(1)
        await first.wait_for_count(2)
        await second.wait_for_count(2)
    assert "First Shop" in to_first["text"] and "Tea" in to_first["text"]
    assert "Second Shop" in to_second["text"] and "Coffee" in to_second["text"]
    invoices = await rows(database_url, Invoice)
    assert sorted(i.amount_cents for i in invoices) == [10_000, 20_000]


async def test_a_message_we_cannot_answer_does_not_cost_the_rest_of_the_batch(
    database_url: str,
) -> None:
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        document = envelope(
            messages=[
                text_message("1" * 40, "hello"),
                text_message(MERCHANT, "help"),
                text_message(CUSTOMER, "hello"),
            ]
        )
        assert (await post(app, document)).status_code == 200
        help_text = (await merchant.wait_for_count(2))[1]["text"]
        welcome = (await app.phone(CUSTOMER).wait_for_count(1))[0]["text"]
    assert "invoice" in help_text and "name" in welcome


# Statuses ---------------------------------------------------------------------------------------


async def invoice_log(database_url: str) -> MessageLog:
    [entry] = await rows(
        database_url,
        MessageLog,
        MessageLog.kind == "invoice",
        MessageLog.direction == Direction.OUTBOUND,
    )
    return entry


async def wait_log(database_url: str, wanted: DeliveryStatus, *, timeout: float = 15) -> MessageLog:
    async with asyncio.timeout(timeout):
        while True:
            entry = await invoice_log(database_url)
            if entry.status is wanted:
                return entry
            await asyncio.sleep(0.05)


async def test_a_status_before_the_sends_answer_is_applied_later(database_url: str) -> None:
    """The simulator posts the statuses at once but holds the send's answer: the statuses
    name a wamid we have not stored yet, so they wait in the outbox and apply afterwards."""
    async with running_app(database_url, outbox_max_attempts=8) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await app.control(
            "PUT",
            "/config",
            json={"timeout_hold_s": 0.5, "faults": {"whatsapp": {"timeout_after": 1.0}}},
        )
        await merchant.say("invoice 0712345678 100 Tea")
        await customer.wait_for(lambda ms: bool(ms) and ms[0]["status"] == "read")
        entry = await wait_log(database_url, DeliveryStatus.READ)
        # "read" may apply before "delivered" (each waits for the wamid on its own schedule):
        # the one left is applied (as a no-op) before the app stops.
        await drained(database_url)
    queued = await rows(database_url, OutboxMessage, OutboxMessage.topic == "whatsapp.status")
    early = [row for row in queued if row.payload["message_id"] == entry.provider_message_id]
    assert early, "the invoice's statuses arrived before its wamid was known"
    assert all(row.status is OutboxStatus.DONE for row in early)
    [invoice] = await rows(database_url, Invoice)
    assert invoice.status.value == "SENT"


async def test_statuses_are_kept_once_and_only_move_forward(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        # The simulator's own statuses come much later (after the test): ours are the only ones.
        await app.control("PUT", "/config", json={"status_delay_ms": 60_000})
        await merchant.say("invoice 0712345678 100 Tea")
        [sent] = await customer.wait_for_count(1)
        await wait_log(database_url, DeliveryStatus.SENT)
        wamid = sent["wamid"]
        for name in ("read", "read", "delivered", "sent"):
            response = await post(app, envelope(statuses=[status(wamid, name, recipient=CUSTOMER)]))
            assert response.status_code == 200
        entry = await invoice_log(database_url)
    assert entry.status is DeliveryStatus.READ
    events = await rows(
        database_url, InboxEvent, InboxEvent.external_id.startswith(wamid, autoescape=True)
    )
    assert sorted(e.external_id for e in events) == [
        f"{wamid}:{n}" for n in ("delivered", "read", "sent")
    ]


async def test_an_undeliverable_invoice_is_told_to_the_merchant_once(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await app.control("PUT", "/config", json={"status_delay_ms": 60_000})
        await merchant.say("invoice 0712345678 100 Tea")
        [sent] = await customer.wait_for_count(1)
        await merchant.wait_for_count(2)
        failed = status(sent["wamid"], "failed", recipient=CUSTOMER, error_code=131026)
        for _ in range(2):
            assert (await post(app, envelope(statuses=[failed]))).status_code == 200
        late = status(sent["wamid"], "delivered", recipient=CUSTOMER)
        assert (await post(app, envelope(statuses=[late]))).status_code == 200
        alert = (await merchant.wait_for_count(3))[2]
        await quiet()
        assert len(await merchant.inbox()) == 3
        entry = await invoice_log(database_url)
    [invoice] = await rows(database_url, Invoice)
    text = alert["text"]
    assert invoice.number in text and "2547•••••678" in text and CUSTOMER not in text
    assert "not be on WhatsApp" in text
    assert "Check the number" in text and f"/i/{invoice.public_token}" in text
    assert entry.status is DeliveryStatus.FAILED and entry.error_code == "131026"


# Senders and message types ---------------------------------------------------------------------


RAW_KINDS = {
    "image": {"type": "image", "image": {"id": "1234", "mime_type": "image/jpeg"}},
    "location": {"type": "location", "location": {"latitude": -1.28, "longitude": 36.82}},
    "unsupported": {"type": "unsupported", "errors": [{"code": 131051}]},
    "future": {"type": "hologram", "hologram": {"depth": 3}},
}


NOT_WRITTEN_TO_US = [
    {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
    {"type": "system", "system": {"body": "User changed number", "type": "user_changed_number"}},
]


async def test_non_text_messages_get_a_reply_that_fits_the_sender(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        stranger = app.phone("254733000000")
        await merchant.say("invoice 0712345678 100 Tea")
        await customer.wait_for_count(1)
        await merchant.wait_for_count(2)
        for kind, raw in RAW_KINDS.items():
            for phone in (merchant, stranger, customer):
                answer = await phone._write({"raw": raw})
                assert answer["webhook_status"] == 200, (kind, phone.msisdn)
                reply = await phone.next_reply()
                if phone is merchant:
                    assert "only read text" in reply["text"], kind
                elif phone is stranger:
                    assert "Welcome" in reply["text"], kind
                else:
                    assert "unpaid invoice" in reply["text"], kind
                    await phone.wait_for(lambda ms: "Want to send invoices" in ms[-1]["text"])
                    phone.skip_to(len(await phone.inbox()))
        # A 👍 on a message, or WhatsApp's notice of a changed number, is nobody writing to us.
        phones = (merchant, stranger, customer)
        before = [len(await phone.inbox()) for phone in phones]
        for raw in NOT_WRITTEN_TO_US:
            for phone in phones:
                assert (await phone._write({"raw": raw}))["webhook_status"] == 200
        await quiet(1.0)
        assert [len(await phone.inbox()) for phone in phones] == before


async def test_a_sender_known_only_by_user_id_is_stored_and_acknowledged(database_url: str) -> None:
    raw = {"from_user_id": "KE.13491208655302741918", "type": "text", "text": {"body": "help"}}
    async with running_app(database_url) as app:
        answer = await app.control("POST", f"/phones/{CUSTOMER}/messages", json={"raw": raw})
        await quiet(0.3)
    assert answer["webhook_status"] == 200
    [event] = await rows(database_url, InboxEvent)
    assert event.external_id == answer["wamid"]
    assert await rows(database_url, MessageLog) == []
    assert await rows(database_url, OutboxMessage) == []


# The answer never waits on a provider ----------------------------------------------------------


async def send_in_flight(database_url: str) -> OutboxMessage:
    async with asyncio.timeout(15):
        while True:
            running = await rows(
                database_url,
                OutboxMessage,
                OutboxMessage.topic == "whatsapp.send",
                OutboxMessage.status == OutboxStatus.RUNNING,
            )
            if running:
                return running[0]
            await asyncio.sleep(0.05)


async def test_the_answer_never_waits_on_a_provider_call(database_url: str) -> None:
    """Every send is held by the simulator far longer than the test: the webhook still answers,
    while a send is visibly in flight and has not finished."""
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        await app.control(
            "PUT",
            "/config",
            json={"timeout_hold_s": 60, "faults": {"whatsapp": {"timeout_before": 1.0}}},
        )
        await merchant.say("help")  # its reply goes to the provider and hangs there
        held = await send_in_flight(database_url)
        answer = await merchant.say("unpaid")  # answered while that send still hangs
        [still] = await rows(database_url, OutboxMessage, OutboxMessage.id == held.id)
        assert answer["webhook_status"] == 200
        assert still.status is OutboxStatus.RUNNING and still.last_error is None
        assert still.attempts == held.attempts
        replies = await rows(
            database_url,
            MessageLog,
            MessageLog.direction == Direction.OUTBOUND,
            MessageLog.status == DeliveryStatus.QUEUED,
        )
        assert len(replies) == 2  # both replies written, neither sent
        assert texts_of(await merchant.inbox())[1:] == []
    inbound = await rows(database_url, MessageLog, MessageLog.direction == Direction.INBOUND)
    assert len(inbound) == 3


# Anything at all, with the right secret: never a 500 --------------------------------------------


@contextlib.contextmanager
def app_in_a_thread(database_url: str) -> Iterator[str]:
    """The app on its own event loop in a thread, so a synchronous Hypothesis test can post to
    it between examples; yields its origin."""
    started: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event] | BaseException]
    started = queue.Queue()

    async def serve() -> None:
        try:
            async with running_app(database_url) as app:
                stop = asyncio.Event()
                started.put((app.origin, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as error:
            started.put(error)
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    outcome = started.get(timeout=30)
    if isinstance(outcome, BaseException):
        raise outcome
    origin, loop, stop = outcome
    try:
        yield origin
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


# JSON allows NUL and unpaired surrogates in strings; PostgreSQL refuses to store either.
_nasty_text = st.sampled_from(["\x00", "a\ud800b", "\udfff", "\u202e", "💸" * 3])
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    _nasty_text,
)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)
# Mostly what WhatsApp sends, sometimes what it never would: each field is fuzzed on its own,
# so the rest of the item still gets past parsing and reaches the code behind it.


def _mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    return st.one_of(usual, usual, usual, odd)


_stamp = _mostly(
    st.integers(1_600_000_000, 1_900_000_000).map(str),
    st.one_of(
        st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]),
        st.from_regex(r"-?\d{1,20}", fullmatch=True),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        _leaf,
    ),
)
_id = _mostly(
    st.from_regex(r"wamid\.[A-Za-z0-9]{10,60}", fullmatch=True),
    st.one_of(st.text(min_size=120, max_size=300), st.text(max_size=5), _leaf),
)
_phone = _mostly(
    st.from_regex(r"2547\d{8}", fullmatch=True),
    st.one_of(st.from_regex(r"\+?\d{0,30}", fullmatch=True), _leaf),
)
_message = st.fixed_dictionaries(
    {
        "id": _id,
        "timestamp": _stamp,
        "from": _phone,
        "type": _mostly(st.sampled_from(["text", "interactive", "button", "image"]), _leaf),
    },
    optional={
        "from_user_id": _leaf,
        "text": st.fixed_dictionaries({"body": st.text(max_size=200) | _leaf}) | _json,
        "interactive": st.fixed_dictionaries(
            {"type": st.sampled_from(["button_reply", "list_reply"]) | _leaf},
            optional={"button_reply": st.fixed_dictionaries({"id": _leaf}) | _json},
        ),
        "button": st.fixed_dictionaries({"payload": _leaf, "text": _leaf}) | _json,
        "context": _json,
    },
)
_status = st.fixed_dictionaries(
    {
        "id": _id,
        "status": st.sampled_from(["sent", "delivered", "read", "failed"]) | _leaf,
        "timestamp": _stamp,
    },
    optional={
        "recipient_id": _phone,
        "errors": st.lists(st.fixed_dictionaries({"code": _leaf}) | _json, max_size=2),
    },
)
_value = st.fixed_dictionaries(
    {
        "messages": st.lists(_message, min_size=1, max_size=3),
        "statuses": st.lists(_status, max_size=3),
    },
    optional={
        "contacts": st.lists(
            st.fixed_dictionaries({"wa_id": _phone, "user_id": _leaf}) | _json, max_size=2
        ),
        "errors": _json,
    },
)
_change = st.fixed_dictionaries({"field": st.just("messages"), "value": _value})
_envelope = st.fixed_dictionaries(
    {
        "object": st.just("whatsapp_business_account"),
        "entry": st.lists(
            st.fixed_dictionaries({"changes": st.lists(_change, min_size=1, max_size=2)}),
            min_size=1,
            max_size=2,
        ),
    }
)


def _encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xef\xbb\xbf{}", b"null"]),
    _json.map(_encoded),
    _envelope.map(_encoded),
    _envelope.map(_encoded),
    _envelope.map(_encoded).map(lambda body: body[: len(body) // 2]),
)


def test_no_body_ever_gets_a_500(database_url: str) -> None:
    with app_in_a_thread(database_url) as origin, httpx.Client(base_url=origin, timeout=20) as http:

        @hypothesis.settings(max_examples=80, deadline=None, derandomize=True)
        @hypothesis.given(body=BODIES)
        def post_it(body: bytes) -> None:
            response = http.post("/whatsapp/webhook", content=body, headers=SECRET_HEADERS)
            assert response.status_code in (200, 400), (body[:200], response.text)

        post_it()


async def test_forward_statuses_are_applied_by_the_webhook_itself_and_the_rest_queued(
    database_url: str,
) -> None:
    # No worker: whatever is not applied in the webhook's own transaction stays queued.
    async with running_app(database_url, run_worker=False) as app:
        await setup_sent_message(database_url, "wamid.OUT1")
        response = await post(
            app,
            envelope(
                statuses=[
                    status("wamid.OUT1", "sent", recipient=CUSTOMER),
                    status("wamid.OUT1", "read", recipient=CUSTOMER),
                    status("wamid.NOT-YET", "delivered", recipient=CUSTOMER),
                    status("wamid.OUT1", "failed", recipient=CUSTOMER, error_code=131026),
                ]
            ),
        )
        assert response.status_code == 200
        (entry,) = await rows(
            database_url, MessageLog, MessageLog.provider_message_id == "wamid.OUT1"
        )
        queued = await rows(database_url, OutboxMessage, OutboxMessage.topic == "whatsapp.status")

    assert entry.status is DeliveryStatus.READ
    assert sorted((q.payload["message_id"], q.payload["status"]) for q in queued) == [
        ("wamid.NOT-YET", "delivered"),
        ("wamid.OUT1", "failed"),
    ]


async def setup_sent_message(database_url: str, wamid: str) -> None:
    """An outbound message WhatsApp accepted as `wamid` (as the sender records it)."""
    engine = make_engine(database_url)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            session.add(
                MessageLog(
                    direction=Direction.OUTBOUND,
                    kind="reply",
                    phone=CUSTOMER,
                    status=DeliveryStatus.SENT,
                    provider_message_id=wamid,
                )
            )
    finally:
        await engine.dispose()
