"""The merchant's side over WhatsApp, end to end over real HTTP with the simulator."""

from __future__ import annotations

import asyncio
import re

import pytest

from invoiceiq.db.models import Customer, Invoice, MessageLog
from invoiceiq.invoices.states import InvoiceStatus
from payments.flows import wait_rows
from support.app_server import Phone, RunningApp, rows, running_app, texts_of

MERCHANT = "254700000001"
CUSTOMER = "254712345678"
INVOICE_NUMBER = re.compile(r"INV[0-9A-Z]{7}")


async def named_merchant(
    app: RunningApp, phone: str = MERCHANT, name: str = "Wanjiku Designs"
) -> Phone:
    merchant = app.phone(phone)
    await merchant.say(f"name {name}")
    reply = await merchant.next_reply()
    assert name in reply["text"]
    return merchant


async def test_one_line_invoice_reaches_customer_and_merchant(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice 0712345678 1500 Logo design")
        [invoice_message] = await customer.wait_for_count(1)
        confirmation = (await merchant.wait_for_count(2))[1]
        await asyncio.sleep(0.3)  # nothing more arrives
        assert len(await customer.inbox()) == 1 and len(await merchant.inbox()) == 2

    [invoice] = await rows(database_url, Invoice)
    assert invoice.status is InvoiceStatus.SENT
    assert invoice.amount_cents == 150_000 and invoice.description == "Logo design"
    assert invoice.vat_cents == 150_000 * 16 // 116 and invoice.vat_percent == 16
    # The customer never wrote: outside the window, so the approved template with its Pay button.
    assert invoice_message["template"]["name"] == "invoice_new"
    for field in ("Wanjiku Designs", invoice.number, "KSh 1,500", "Logo design"):
        assert field in invoice_message["text"]
    assert f"{app.origin}/i/{invoice.public_token}" in invoice_message["text"]
    assert invoice_message["buttons"] == [
        {"id": f"pay:{invoice.number}", "title": "Pay with M-PESA"}
    ]
    text = confirmation["text"]
    assert invoice.number in text and "KSh 1,500" in text and "2547•••••678" in text
    assert CUSTOMER not in text
    assert f"/i/{invoice.public_token}" in text
    for command in ("status", "remind", "cancel"):
        assert f"{command} {invoice.number}" in text


async def test_inside_the_window_the_customer_gets_the_interactive_message(
    database_url: str,
) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await customer.say("hi")
        welcome = await customer.next_reply()
        assert "name" in welcome["text"]
        await merchant.say("vat off")
        await merchant.next_reply()
        await merchant.say("invoice 254712345678 2,000 Cake")
        message = (await customer.wait_for_count(2))[1]
    assert message["type"] == "interactive" and message["template"] is None
    assert "Includes VAT" not in message["text"]
    number = INVOICE_NUMBER.search(message["text"])
    assert number is not None
    assert message["buttons"] == [{"id": f"pay:{number.group()}", "title": "Pay with M-PESA"}]


async def test_a_131047_failure_is_followed_by_one_template(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await customer.say("hello")
        await customer.next_reply()
        # Our record says the window is open; WhatsApp's clock says it closed (e.g. a long
        # outage): the free-form invoice fails with 131047 and goes again as the template.
        await app.control(
            "PUT", f"/phones/{CUSTOMER}/last-inbound", json={"at": "2020-01-01T00:00:00+00:00"}
        )
        await merchant.say("invoice 0712345678 700 Bread")
        messages = await customer.wait_for(
            lambda ms: any(m["template"] for m in ms[1:]), timeout=15
        )
        await asyncio.sleep(0.5)
        messages = (await customer.inbox())[1:]
    assert (messages[0]["status"], messages[0]["error_code"]) == ("failed", 131047)
    templates = [m for m in messages if m["template"]]
    assert len(templates) == 1 and templates[0]["template"]["name"] == "invoice_new"
    assert len(messages) == 2


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("07{rest}", "2547{rest}"),
        ("01{rest}", "2541{rest}"),
        ("+2547{rest}", "2547{rest}"),
        ("2541{rest}", "2541{rest}"),
    ],
)
async def test_phone_forms(database_url: str, typed: str, expected: str) -> None:
    rest = "12345678"
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        await merchant.say(f"invoice {typed.format(rest=rest)} 100 Sugar")
        await app.phone(expected.format(rest=rest)).wait_for_count(1)
    [invoice] = await rows(database_url, Invoice)
    assert invoice.customer_phone == expected.format(rest=rest)


async def test_saved_customer_found_by_name(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice")
        await merchant.next_reply()
        for answer in ("0712345678", "Mama Mboga", "300", "Tomatoes"):
            await merchant.say(answer)
            reply = await merchant.next_reply()
        await merchant.tap(reply["buttons"][0]["id"])
        await customer.wait_for_count(1)
        await merchant.say("invoice mama mboga 500 Sukuma")
        await customer.wait_for_count(2)
        await merchant.wait_for(lambda ms: sum("on its way" in m["text"] for m in ms) == 2)
        await merchant.say("invoice Mama Mboga 500")  # no description
        assert "Add what the invoice is for" in (await merchant.next_reply())["text"]
    invoices = await rows(database_url, Invoice)
    assert sorted(i.description for i in invoices) == ["Sukuma", "Tomatoes"]
    assert {i.customer_name for i in invoices} == {"Mama Mboga"}


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ("invoice 123456 1000 Services", "phone number"),
        ("invoice 254712345678 0 Services", "at least KSh 1"),
        ("invoice 254712345678 1000", "Add what the invoice is for"),
        ("invoice 254712345678 1000 ab", "too short"),
        ("invoice 254712345678 1000 " + "d" * 121, "too long"),
        ("invoice 254712345678 1000.50 Cake", "whole shillings"),
        ("invoice Unknown Person 1000 Cake", "no saved customer called Unknown Person"),
    ],
)
async def test_bad_commands_create_nothing(database_url: str, command: str, fragment: str) -> None:
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        await merchant.say(command)
        reply = await merchant.next_reply()
    assert fragment.lower() in reply["text"].lower()
    assert await rows(database_url, Invoice) == []
    assert await rows(database_url, Customer) == []


async def test_guided_flow_with_back_and_validation(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        steps = [
            ("INVOICE", "phone number"),
            ("12", "phone number"),  # re-asked with the reason
            ("0712345678", "name"),
            ("back", "phone number"),
            ("0712345678", "name"),
            ("skip", "How much"),
            ("0", "at least KSh 1"),
            ("help", "InvoiceIQ"),  # a command mid-flow is a command
            ("1,250", "What is it for"),
            ("Web hosting", "Please check"),
        ]
        for typed, expected in steps:
            await merchant.say(typed)
            reply = await merchant.next_reply()
            assert expected.lower() in reply["text"].lower(), (typed, reply["text"])
        assert "KSh 1,250" in reply["text"] and "Web hosting" in reply["text"]
        assert [b["title"] for b in reply["buttons"]] == ["Send", "Edit", "Cancel"]
        send = reply["buttons"][0]["id"]
        await merchant.tap(send)
        await customer.wait_for_count(1)
        await merchant.wait_for(lambda ms: "on its way" in ms[-1]["text"])
        await merchant.tap(send)  # tapped twice: the second is stale
        stale = await merchant.next_reply()
        await asyncio.sleep(0.3)
        assert len(texts_of(await customer.inbox())) == 1
    assert "no longer active" in stale["text"]
    [invoice] = await rows(database_url, Invoice)
    assert invoice.amount_cents == 125_000 and invoice.customer_name is None


async def test_guided_cancel_and_edit(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        for typed in ("invoice", "0712345678", "Jane", "500", "Cake"):
            await merchant.say(typed)
            reply = await merchant.next_reply()
        edit, cancel = reply["buttons"][1]["id"], reply["buttons"][2]["id"]
        await merchant.tap(edit)
        assert "What do you want to change" in (await merchant.next_reply())["text"]
        await merchant.say("cancel")
        assert "no invoice was sent" in (await merchant.next_reply())["text"]
        await merchant.tap(cancel)
        assert "no longer active" in (await merchant.next_reply())["text"]
    assert await rows(database_url, Invoice) == []


async def test_guided_flow_survives_a_restart(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        for typed in ("invoice", "0712345678", "Jane"):
            await merchant.say(typed)
            await merchant.next_reply()
    async with running_app(database_url) as app:  # a new process: nothing kept in memory
        merchant, customer = app.phone(MERCHANT), app.phone(CUSTOMER)
        await merchant.say("800")
        assert "What is it for" in (await merchant.next_reply())["text"]
        await merchant.say("Flowers")
        summary = await merchant.next_reply()
        await merchant.tap(summary["buttons"][0]["id"])
        await customer.wait_for_count(1)
    [invoice] = await rows(database_url, Invoice)
    assert invoice.customer_name == "Jane" and invoice.amount_cents == 80_000


async def test_guided_flow_expires(database_url: str) -> None:
    async with running_app(database_url, conversation_ttl=1) as app:
        merchant = await named_merchant(app)
        await merchant.say("invoice")
        await merchant.next_reply()
        await asyncio.sleep(1.2)
        await merchant.say("0712345678")
        reply = await merchant.next_reply()
    assert "expired" in reply["text"]
    assert await rows(database_url, Invoice) == []


async def test_ten_merchants_at_once_get_distinct_invoices(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchants = [
            await named_merchant(app, f"2547000001{n:02d}", f"Shop {n}") for n in range(10)
        ]
        await asyncio.gather(
            *(m.say(f"invoice 07220000{n:02d} {100 + n} Goods") for n, m in enumerate(merchants))
        )
        await asyncio.gather(*(m.wait_for_count(2) for m in merchants))
    invoices = await rows(database_url, Invoice)
    assert len(invoices) == 10
    assert len({i.number for i in invoices}) == 10
    assert sorted(i.amount_cents for i in invoices) == [(100 + n) * 100 for n in range(10)]


async def test_merchant_must_name_business_be_approved_and_not_suspended(database_url: str) -> None:
    async with running_app(database_url, merchant_signup="approval") as app:
        merchant = app.phone(MERCHANT)
        await merchant.say("invoice 0712345678 100 Tea")
        assert "name" in (await merchant.next_reply())["text"]  # unknown number: the welcome
        await merchant.say("name Chai Point")
        assert "waiting for approval" in (await merchant.next_reply())["text"]
        await merchant.say("invoice 0712345678 100 Tea")
        assert "waiting for approval" in (await merchant.next_reply())["text"]
        assert await rows(database_url, Invoice) == []

        await _cli(app, "merchant", "approve", "0700000001")
        assert "approved" in (await merchant.next_reply())["text"]
        await merchant.say("invoice 0712345678 100 Tea")
        await app.phone(CUSTOMER).wait_for_count(1)

        await _cli(app, "merchant", "suspend", MERCHANT)
        assert "was suspended already: nothing to do" in await _cli(
            app, "merchant", "suspend", MERCHANT
        )
        await merchant.say("invoice 0712345678 200 Tea")
        assert "suspended" in (await merchant.next_reply(timeout=10))["text"]
        # Approving lifts a suspension, and says so; approving an active merchant again is
        # nothing new, for the operator nor the merchant.
        assert "was suspended, can invoice again" in await _cli(
            app, "merchant", "approve", MERCHANT
        )
        assert "approved" in (await merchant.next_reply())["text"]
        assert "nothing to approve" in await _cli(app, "merchant", "approve", MERCHANT)
    assert len(await rows(database_url, Invoice)) == 1
    assert len(await rows(database_url, MessageLog, MessageLog.kind == "account")) == 2


async def test_an_approval_after_the_merchants_window_closed_goes_as_its_template(
    database_url: str,
) -> None:
    async with running_app(database_url, merchant_signup="approval", customer_window=1) as app:
        merchant = app.phone(MERCHANT)
        await merchant.say("name Chai Point")
        assert "waiting for approval" in (await merchant.next_reply())["text"]
        await asyncio.sleep(1.5)  # CUSTOMER_WINDOW: the merchant's window has closed

        await _cli(app, "merchant", "approve", MERCHANT)
        approval = await merchant.next_reply()

    assert approval["template"]["name"] == "merchant_account_approved"
    assert approval["template"]["params"] == ["Chai Point"]


async def _cli(app: RunningApp, *args: str) -> str:
    import os
    import sys

    env = {**os.environ, "DATABASE_URL": app.settings.database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "invoiceiq",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_stop_and_start(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice 0712345678 100 Tea")
        await customer.wait_for_count(1)
        await merchant.wait_for_count(2)
        number = INVOICE_NUMBER.search((await customer.inbox())[0]["text"]).group()  # type: ignore[union-attr]
        await customer.say("STOP")
        assert "won't receive invoices" in (await customer.next_reply())["text"]
        await merchant.say("invoice 0712345678 200 Coffee")
        assert "STOP" in (await merchant.next_reply())["text"]
        await merchant.say(f"remind {number}")
        assert "STOP" in (await merchant.next_reply())["text"]
        await customer.say("start")
        assert "again" in (await customer.next_reply())["text"]
        await merchant.say("invoice 0712345678 200 Coffee")
        await customer.wait_for(lambda ms: "Coffee" in ms[-1]["text"])
    assert len(await rows(database_url, Invoice)) == 2


async def test_customer_with_unpaid_invoices_sees_them_newest_first(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        for n, item in enumerate(("One", "Two", "Three", "Four")):
            await merchant.say(f"invoice 0712345678 {10 + n} {item}")
            await customer.wait_for_count(n + 1)
        await customer.say("hello?")
        messages = await customer.wait_for_count(4 + 5)
    replies = messages[4:]
    assert "4 unpaid" not in replies[0]["text"] and "3 unpaid" in replies[0]["text"]
    listed = [m for m in replies if m["buttons"]]
    assert [
        "Four" in listed[0]["text"],
        "Three" in listed[1]["text"],
        "Two" in listed[2]["text"],
    ] == [True] * 3
    assert all(m["buttons"][0]["id"].startswith("pay:INV") for m in listed)
    assert "name" in replies[-1]["text"]


async def test_status_unpaid_cancel_remind_belong_to_their_merchant(database_url: str) -> None:
    async with running_app(database_url, remind_min_interval=0) as app:
        owner, other = await named_merchant(app), await named_merchant(app, "254700000009", "Other")
        customer = app.phone(CUSTOMER)
        await owner.say("invoice 0712345678 100 Tea")
        await customer.wait_for_count(1)
        [invoice] = await rows(database_url, Invoice)
        number = invoice.number
        for command in (f"status {number}", f"cancel {number}", f"remind {number}"):
            await other.say(command)
            assert "no invoice" in (await other.next_reply())["text"].lower()
        await owner.say(f"status {number}")
        assert (
            number
            in (await owner.wait_for(lambda ms: f"Invoice {number}: sent" in ms[-1]["text"]))[-1][
                "text"
            ]
        )
        await owner.say("unpaid")
        assert "Unpaid invoices (1)" in (await owner.next_reply())["text"]
        await owner.say(f"remind {number}")
        await customer.wait_for_count(2)
        assert (await customer.inbox())[1]["template"]["name"] == "invoice_reminder"
        await owner.say(f"cancel {number}")
        assert "cancelled" in (await owner.next_reply())["text"]
        await owner.say(f"cancel {number}")
        assert "already cancelled" in (await owner.next_reply())["text"]
        await owner.say(f"remind {number}")
        assert "no reminder" in (await owner.next_reply())["text"]
    [invoice] = await rows(database_url, Invoice)
    assert invoice.status is InvoiceStatus.CANCELLED


async def test_remind_is_limited_per_interval(database_url: str) -> None:
    async with running_app(database_url) as app:  # REMIND_MIN_INTERVAL=3600 by default
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice 0712345678 100 Tea")
        await customer.wait_for_count(1)
        [invoice] = await rows(database_url, Invoice)
        await merchant.wait_for_count(2)
        await merchant.say(f"remind {invoice.number}")
        assert "remind again in" in (await merchant.next_reply())["text"]
        await asyncio.sleep(0.3)
        assert len(await customer.inbox()) == 1


async def test_message_log_keeps_every_message_with_forward_only_status(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice 0712345678 100 Tea")
        await customer.wait_for(lambda ms: ms and ms[0]["status"] == "read", timeout=15)
        await merchant.wait_for(lambda ms: len(ms) == 2 and ms[1]["status"] == "read")
        # The app applies a status at once, or after its send's answer if the status came first.
        await wait_rows(
            database_url,
            MessageLog,
            lambda entries: [e.status.value for e in entries] == ["read"],
            MessageLog.kind == "invoice",
        )
    logs = await rows(database_url, MessageLog)
    outbound = [entry for entry in logs if entry.direction.value == "out"]
    assert {entry.kind for entry in outbound} == {"reply", "invoice", "confirmation"}
    invoice_log = next(entry for entry in outbound if entry.kind == "invoice")
    assert invoice_log.status.value == "read" and invoice_log.provider_message_id
    assert invoice_log.template_name == "invoice_new" and invoice_log.invoice_id is not None
