"""The `whatsapp.send` handler against the simulator's 360dialog fake over real HTTP, on both
databases: what a rejected send, a send failing to its last attempt, and a fault of ours each
leave behind, and that the merchant hears of an undelivered invoice once."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from invoiceiq.config import Settings, SignupMode
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, MessageLog, OutboxMessage
from invoiceiq.handlers import outbox_worker
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.http import make_http_client
from invoiceiq.merchants import service as merchant_service
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.models import DeliveryStatus
from invoiceiq.notifications.schemas import Outbound, TemplateCall
from invoiceiq.notifications.sender import Sender, template_param
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.providers import make_providers
from invoiceiq.simulator.config import Faults, SimulatorConfig, SimulatorSettings, WhatsAppFaults
from invoiceiq.whatsapp.client import WhatsAppClient
from invoiceiq.whatsapp.simulator import WhatsAppFake
from invoiceiq.whatsapp.templates import TemplateDefinition, load_templates
from invoiceiq.worker import GiveUp, RetryLater
from support.db import make_settings
from support.servers import serve_app

API_KEY = "test-key"
MERCHANT = "254700000001"
CUSTOMER = "254712345678"
MAX_ATTEMPTS = 3


@dataclass
class Rig:
    fake: WhatsAppFake
    simulator: SimulatorSettings
    sender: Sender
    sessions: SessionFactory
    settings: Settings

    def fail_every_send(self) -> None:
        faults = Faults(whatsapp=WhatsAppFaults(error_5xx=1.0))
        self.simulator.update(SimulatorConfig(faults=faults))

    def heal(self) -> None:
        self.simulator.update(SimulatorConfig())


@contextlib.asynccontextmanager
async def rig(
    sessions: SessionFactory,
    database_url: str,
    templates: Mapping[str, TemplateDefinition] | None = None,
) -> AsyncIterator[Rig]:
    simulator = SimulatorSettings(SimulatorConfig())
    async with make_http_client() as http:
        fake = WhatsAppFake(simulator, templates or load_templates(), api_key=API_KEY, http=http)
        app = FastAPI()
        app.include_router(fake.router)
        async with serve_app(app) as base_url:
            settings = make_settings(
                database_url=database_url,
                outbox_max_attempts=MAX_ATTEMPTS,
                whatsapp_api_url=base_url,  # for the worker `outbox_worker` builds
                whatsapp_api_key=API_KEY,
            )
            sender = Sender(
                sessions=sessions,
                client=WhatsAppClient(base_url, API_KEY, http),
                settings=settings,
            )
            try:
                yield Rig(fake, simulator, sender, sessions, settings)
            finally:
                await fake.aclose()


async def issue(rig: Rig, *, description: str = "Logo design") -> Invoice:
    async with rig.sessions() as session, session.begin():
        merchant = await merchant_service.set_business_name(
            session, phone=MERCHANT, name="Wanjiku Designs", signup=SignupMode.OPEN
        )
        return await invoice_service.issue_invoice(
            session,
            settings=rig.settings,
            merchant=merchant,
            customer_phone=CUSTOMER,
            customer_name=None,
            amount_cents=150_000,
            description=description,
        )


async def send_row(rig: Rig, kind: str, *, attempts: int = 1) -> ClaimedRow:
    """The outbox row that sends the (only) message of `kind`, as a worker would claim it."""
    async with rig.sessions() as session:
        [entry] = list(await session.scalars(sa.select(MessageLog).where(MessageLog.kind == kind)))
        rows = await session.scalars(sa.select(OutboxMessage))
        [row] = [r for r in rows if r.payload.get("message_log_id") == str(entry.id)]
    return ClaimedRow(row.id, row.topic, row.payload, attempts, uuid.uuid4().hex)


async def logs(rig: Rig, kind: str) -> list[MessageLog]:
    async with rig.sessions() as session:
        return list(await session.scalars(sa.select(MessageLog).where(MessageLog.kind == kind)))


async def the_invoice(rig: Rig) -> Invoice:
    async with rig.sessions() as session:
        [invoice] = list(await session.scalars(sa.select(Invoice)))
        return invoice


async def test_a_send_the_provider_rejects_is_final_and_told_once(
    sessions: SessionFactory, database_url: str
) -> None:
    """The invoice template is not approved on this account: WhatsApp refuses it for good."""
    templates = {n: t for n, t in load_templates().items() if n != "invoice_new"}
    async with rig(sessions, database_url, templates) as r:
        invoice = await issue(r)
        row = await send_row(r, "invoice")
        for _ in range(2):  # the row claimed again after a crash: still told once
            with pytest.raises(GiveUp):
                await r.sender(row)
        [entry] = await logs(r, "invoice")
        [alert] = await logs(r, "alert")
        assert entry.status is DeliveryStatus.FAILED and entry.error_code == "132001"
        assert alert.phone == MERCHANT and alert.invoice_id == invoice.id
        text: str = (alert.request or {})["text"]
        assert "WhatsApp did not accept the message" in text
        assert f"/i/{invoice.public_token}" in text and "2547•••••678" in text
        assert (await the_invoice(r)).status is InvoiceStatus.PENDING
        assert r.fake.inbox(CUSTOMER) == []


async def test_a_send_failing_to_its_last_attempt_is_told_once(
    sessions: SessionFactory, database_url: str
) -> None:
    async with rig(sessions, database_url) as r:
        invoice = await issue(r)
        r.fail_every_send()
        with pytest.raises(RetryLater):
            await r.sender(await send_row(r, "invoice", attempts=MAX_ATTEMPTS - 1))
        assert await logs(r, "alert") == []
        last = await send_row(r, "invoice", attempts=MAX_ATTEMPTS)
        for _ in range(2):
            with pytest.raises(GiveUp):
                await r.sender(last)
        [alert] = await logs(r, "alert")
        text: str = (alert.request or {})["text"]
        assert "could not be reached" in text and f"remind {invoice.number}" in text
        # An operator's `outbox retry` once WhatsApp is back: the message goes after all.
        r.heal()
        await r.sender(await send_row(r, "invoice", attempts=1))
        [entry] = await logs(r, "invoice")
        assert entry.status is DeliveryStatus.SENT and entry.error_code is None
        assert (await the_invoice(r)).status is InvoiceStatus.SENT
        assert len(r.fake.inbox(CUSTOMER)) == 1


async def test_a_fault_of_ours_at_the_last_attempt_is_told_too(
    sessions: SessionFactory, database_url: str
) -> None:
    async with rig(sessions, database_url) as r:
        await issue(r)
        async with r.sessions() as session, session.begin():
            await session.execute(
                sa.update(MessageLog)
                .where(MessageLog.kind == "invoice")
                .values(request={"not": "a message"})
            )
        with pytest.raises(KeyError):
            await r.sender(await send_row(r, "invoice", attempts=1))
        assert await logs(r, "alert") == []
        with pytest.raises(KeyError):  # the worker buries the row; the merchant is told
            await r.sender(await send_row(r, "invoice", attempts=MAX_ATTEMPTS))
        [alert] = await logs(r, "alert")
        assert "could not be reached" in (alert.request or {})["text"]


async def abandon(rig: Rig, row: ClaimedRow) -> None:
    """The row on its last attempt, whose worker died mid-run: its lease ran out longer than a
    handler timeout ago."""
    expired = utcnow() - timedelta(seconds=rig.settings.outbox_handler_timeout + 1)
    async with rig.sessions() as session, session.begin():
        await session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(
                status=OutboxStatus.RUNNING,
                attempts=MAX_ATTEMPTS,
                claim_token="a-worker-that-died",
                locked_until=expired,
            )
        )


async def run_worker(rig: Rig) -> None:
    """The worker `invoiceiq worker` runs, sending through the rig's fake."""
    providers = make_providers(rig.settings, local_origin="http://unused", sessions=rig.sessions)
    try:
        await outbox_worker(rig.settings, rig.sessions, providers).run_until_idle()
    finally:
        await providers.aclose()


async def test_a_send_whose_last_run_never_finished_is_told_too(
    sessions: SessionFactory, database_url: str
) -> None:
    """The worker was killed during the last allowed run of the invoice's send (a run past
    OUTBOX_HANDLER_TIMEOUT ends the same way): the row is buried, the message marked failed
    and the merchant told, in one transaction."""
    async with rig(sessions, database_url) as r:
        invoice = await issue(r)
        row = await send_row(r, "invoice")
        await abandon(r, row)

        await run_worker(r)

        async with r.sessions() as session:
            buried = await session.get(OutboxMessage, row.id)
        assert buried is not None and buried.status is OutboxStatus.DEAD
        [entry] = await logs(r, "invoice")
        assert entry.status is DeliveryStatus.FAILED and entry.error_code == "dead"
        [alert] = await logs(r, "alert")
        text: str = (alert.request or {})["text"]
        assert "could not be reached" in text and f"remind {invoice.number}" in text
        assert r.fake.inbox(CUSTOMER) == []
        # The worker sent the alert too (the merchant's "on its way" went before it).
        *_, told = r.fake.inbox(MERCHANT)
        assert told["template"]["name"] == "merchant_delivery_failed"
        assert invoice.number in told["template"]["params"]


async def test_a_send_recorded_before_its_row_was_abandoned_is_not_told_as_failed(
    sessions: SessionFactory, database_url: str
) -> None:
    """An earlier run sent it and recorded the send, then lost its lease; the run after died:
    the message went, so nothing is marked failed and the merchant hears nothing."""
    async with rig(sessions, database_url) as r:
        await issue(r)
        row = await send_row(r, "invoice")
        await r.sender(row)
        await abandon(r, row)

        await run_worker(r)

        [entry] = await logs(r, "invoice")
        assert entry.status is DeliveryStatus.SENT
        assert await logs(r, "alert") == []
        assert len(r.fake.inbox(CUSTOMER)) == 1


async def test_template_parameters_go_on_one_line(
    sessions: SessionFactory, database_url: str
) -> None:
    """A description with line breaks (as the API may take it) would make WhatsApp refuse the
    template; the template gets it on one line, the free-form message keeps the lines."""
    async with rig(sessions, database_url) as r:
        await issue(r, description="Logo design\n\tand     business cards")
        await r.sender(await send_row(r, "invoice"))
        [received] = r.fake.inbox(CUSTOMER)
        assert received["template"]["name"] == "invoice_new"
        assert "Logo design and business cards" in received["template"]["params"]
        [entry] = await logs(r, "invoice")
        assert entry.status is DeliveryStatus.SENT


@pytest.mark.parametrize("status", [InvoiceStatus.CANCELLED, InvoiceStatus.PAID])
async def test_an_invoice_settled_before_its_message_went_out_is_not_sent(
    sessions: SessionFactory, database_url: str, status: InvoiceStatus
) -> None:
    """Cancelled (or paid) while its message waited in the queue: a Pay button now could only
    confuse the customer; the merchant, who cancelled it, is not told of a failed delivery."""
    async with rig(sessions, database_url) as r:
        invoice = await issue(r)
        row = await send_row(r, "invoice")
        async with r.sessions() as session, session.begin():
            await session.execute(
                sa.update(Invoice).where(Invoice.id == invoice.id).values(status=status)
            )

        assert await r.sender(row) is None

        [entry] = await logs(r, "invoice")
        assert entry.status is DeliveryStatus.FAILED and entry.error_code == "withdrawn"
        assert r.fake.request_count == 0 and await logs(r, "alert") == []
        assert (await the_invoice(r)).status is status


@pytest.mark.parametrize(
    ("kind", "status", "sent"),
    [
        ("reminder", InvoiceStatus.CANCELLED, False),
        ("invoice_copy", InvoiceStatus.PAID, False),
        ("reminder", InvoiceStatus.SENT, True),  # after a failed payment: still payable
        ("receipt", InvoiceStatus.PAID, True),
        ("payment_failed", InvoiceStatus.CANCELLED, True),
    ],
)
async def test_only_messages_that_offer_to_pay_are_withdrawn(
    sessions: SessionFactory, database_url: str, kind: str, status: InvoiceStatus, sent: bool
) -> None:
    async with rig(sessions, database_url) as r:
        invoice = await issue(r)
        async with r.sessions() as session, session.begin():
            await session.execute(
                sa.update(Invoice).where(Invoice.id == invoice.id).values(status=status)
            )
            await notifications.log_inbound(session, phone=CUSTOMER, kind="text", wamid="w.1")
            await notifications.send(
                session, to=CUSTOMER, message=Outbound(kind=kind, text="x"), invoice_id=invoice.id
            )

        await r.sender(await send_row(r, kind))

        [entry] = await logs(r, kind)
        assert (entry.status is DeliveryStatus.SENT) is sent
        assert (entry.error_code == "withdrawn") is not sent


async def queue(rig: Rig, message: Outbound, *, wrote_ago: timedelta | None) -> ClaimedRow:
    """`message` queued to the customer, who last wrote `wrote_ago` (None: never)."""
    async with rig.sessions() as session, session.begin():
        if wrote_ago is not None:
            await notifications.log_inbound(session, phone=CUSTOMER, kind="text", wamid="wamid.in")
            await session.execute(sa.update(MessageLog).values(created_at=utcnow() - wrote_ago))
        await notifications.send(session, to=CUSTOMER, message=message)
    return await send_row(rig, message.kind)


@pytest.mark.parametrize("wrote_ago", [None, timedelta(hours=25)])
async def test_a_free_form_message_with_no_template_is_not_sent_outside_the_window(
    sessions: SessionFactory, database_url: str, wrote_ago: timedelta | None
) -> None:
    """WhatsApp would accept it, then fail it with 131047: it is recorded failed at once, with
    that code, and nothing reaches WhatsApp."""
    async with rig(sessions, database_url) as r:
        row = await queue(r, Outbound(kind="reply", text="Check your phone"), wrote_ago=wrote_ago)

        assert await r.sender(row) is None

        [entry] = await logs(r, "reply")
        assert entry.status is DeliveryStatus.FAILED and entry.error_code == "131047"
        assert entry.provider_message_id is None
        assert r.fake.inbox(CUSTOMER) == [] and r.fake.request_count == 0


async def test_the_same_message_inside_the_window_is_sent(
    sessions: SessionFactory, database_url: str
) -> None:
    async with rig(sessions, database_url) as r:
        message = Outbound(kind="reply", text="Check your phone")
        row = await queue(r, message, wrote_ago=timedelta(hours=23))

        await r.sender(row)

        [entry] = await logs(r, "reply")
        assert entry.status is DeliveryStatus.SENT
        assert [m["text"] for m in r.fake.inbox(CUSTOMER)] == ["Check your phone"]


async def test_outside_the_window_a_message_with_a_template_goes_as_the_template(
    sessions: SessionFactory, database_url: str
) -> None:
    async with rig(sessions, database_url) as r:
        message = Outbound(
            kind="account",
            text="Good news",
            template=TemplateCall("merchant_account_approved", ("Wanjiku Designs",)),
        )
        row = await queue(r, message, wrote_ago=timedelta(hours=25))

        await r.sender(row)

        [received] = r.fake.inbox(CUSTOMER)
        assert received["template"]["name"] == "merchant_account_approved"
        assert "Wanjiku Designs" in received["template"]["params"]


@pytest.mark.parametrize(
    ("given", "sent"),
    [("a\nb", "a b"), ("a\t b", "a b"), ("a     b", "a b"), ("  ", "-"), ("ok", "ok")],
)
def test_template_param(given: str, sent: str) -> None:
    assert template_param(given) == sent
