"""Delivery statuses on the database (both kinds): forward only, 131047 re-sent once as the
template, a failed invoice or reminder told to its merchant once, unknown messages retried."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, MessageLog, OutboxMessage
from invoiceiq.kit.clock import utcnow
from invoiceiq.notifications import delivery, repository
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.models import DeliveryStatus
from invoiceiq.notifications.schemas import Outbound, TemplateCall
from support import factories

CUSTOMER = "254712345678"


async def logged(
    session: AsyncSession,
    invoice: Invoice | None,
    *,
    kind: str = "invoice",
    wamid: str | None = None,
    template: bool = True,
) -> MessageLog:
    """A message as the sender leaves it once WhatsApp took it (`wamid`), or still queued."""
    message = Outbound(
        kind=kind,
        text="Invoice…",
        template=TemplateCall("invoice_new", ("a", "b", "c", "d", "e")) if template else None,
    )
    log_id = await notifications.send(
        session, to=CUSTOMER, message=message, invoice_id=invoice.id if invoice else None
    )
    if wamid is not None:
        await session.execute(
            sa.update(MessageLog)
            .where(MessageLog.id == log_id)
            .values(provider_message_id=wamid, status=DeliveryStatus.SENT)
        )
    entry = await session.get(MessageLog, log_id)
    assert entry is not None
    return entry


async def apply(
    sessions: SessionFactory, settings: Settings, wamid: str, status: str, code: str | None = None
) -> bool:
    async with sessions() as session, session.begin():
        return await delivery.apply_status(
            session, settings, provider_id=wamid, status=status, at=utcnow(), error_code=code
        )


async def entry_of(sessions: SessionFactory, log_id: uuid.UUID) -> MessageLog:
    async with sessions() as session:
        entry = await session.get(MessageLog, log_id)
        assert entry is not None
        return entry


async def alerts(sessions: SessionFactory) -> list[MessageLog]:
    async with sessions() as session:
        return list(await session.scalars(sa.select(MessageLog).where(MessageLog.kind == "alert")))


@pytest.fixture
async def sent(sessions: SessionFactory) -> tuple[Invoice, MessageLog]:
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, customer_phone=CUSTOMER)
        entry = await logged(session, invoice, wamid="wamid.SENT1")
    return invoice, entry


async def test_statuses_only_move_forward(
    sessions: SessionFactory, settings: Settings, sent: tuple[Invoice, MessageLog]
) -> None:
    _, entry = sent
    steps = [("read", "read"), ("delivered", "read"), ("sent", "read"), ("failed", "read")]
    for status, expected in steps:
        assert await apply(sessions, settings, "wamid.SENT1", status, "131026")
        assert (await entry_of(sessions, entry.id)).status.value == expected, status
    assert await alerts(sessions) == []  # a failure after it was read is not believed


async def test_statuses_we_do_not_track_are_acknowledged(
    sessions: SessionFactory, settings: Settings, sent: tuple[Invoice, MessageLog]
) -> None:
    assert await apply(sessions, settings, "wamid.SENT1", "deleted")
    assert (await entry_of(sessions, sent[1].id)).status is DeliveryStatus.SENT


async def test_a_status_for_a_message_not_stored_yet_is_kept_for_later(
    sessions: SessionFactory, settings: Settings
) -> None:
    assert not await apply(sessions, settings, "wamid.UNKNOWN", "delivered")


async def test_an_undeliverable_invoice_is_told_once(
    sessions: SessionFactory, settings: Settings, sent: tuple[Invoice, MessageLog]
) -> None:
    invoice, entry = sent
    for _ in range(2):
        assert await apply(sessions, settings, "wamid.SENT1", "failed", "131026")
    assert await apply(sessions, settings, "wamid.SENT1", "delivered")
    [alert] = await alerts(sessions)
    failed = await entry_of(sessions, entry.id)
    assert failed.status is DeliveryStatus.FAILED and failed.error_code == "131026"
    text = (alert.request or {})["text"]
    assert f"We could not deliver invoice {invoice.number} to 2547•••••678" in text
    assert "may not be on WhatsApp" in text and "Check the number" in text
    assert f"/i/{invoice.public_token}" in text
    template = (alert.request or {})["template"]
    assert template["name"] == "merchant_delivery_failed" and len(template["params"]) == 4


async def test_an_undelivered_reminder_says_reminder(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, customer_phone=CUSTOMER)
        await logged(session, invoice, kind="reminder", wamid="wamid.REM1")
    assert await apply(sessions, settings, "wamid.REM1", "failed", "131049")
    [alert] = await alerts(sessions)
    text = (alert.request or {})["text"]
    assert f"reminder for invoice {invoice.number}" in text and "held it back" in text


async def test_other_messages_failing_tell_nobody(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with sessions() as session, session.begin():
        entry = await logged(session, None, kind="reply", wamid="wamid.R1", template=False)
    assert await apply(sessions, settings, "wamid.R1", "failed", "131026")
    assert (await entry_of(sessions, entry.id)).status is DeliveryStatus.FAILED
    assert await alerts(sessions) == []


async def test_131047_is_re_sent_once_as_the_template(
    sessions: SessionFactory, settings: Settings, sent: tuple[Invoice, MessageLog]
) -> None:
    invoice, entry = sent
    for _ in range(2):
        assert await apply(sessions, settings, "wamid.SENT1", "failed", "131047")
    async with sessions() as session:
        invoices_logs = list(
            await session.scalars(
                sa.select(MessageLog)
                .where(MessageLog.kind == "invoice")
                .order_by(MessageLog.created_at)
            )
        )
        resends = [
            row
            for row in await session.scalars(sa.select(OutboxMessage))
            if row.payload.get("as_template")
        ]
    assert [e.status for e in invoices_logs] == [DeliveryStatus.FAILED, DeliveryStatus.QUEUED]
    assert invoices_logs[1].invoice_id == invoice.id and invoices_logs[1].request == entry.request
    assert len(resends) == 1
    assert await alerts(sessions) == []  # it is being re-sent: nothing to tell yet


@pytest.mark.parametrize("reached", ["delivered", "read"])
async def test_131047_after_the_message_reached_the_phone_re_sends_nothing(
    sessions: SessionFactory, settings: Settings, sent: tuple[Invoice, MessageLog], reached: str
) -> None:
    """Statuses can contradict each other (one device delivered, another failed): once the
    message is on the phone, a late 131047 does not send the invoice a second time."""
    _, entry = sent
    assert await apply(sessions, settings, "wamid.SENT1", reached, None)
    assert await apply(sessions, settings, "wamid.SENT1", "failed", "131047")
    async with sessions() as session:
        resends = [
            row
            for row in await session.scalars(sa.select(OutboxMessage))
            if row.payload.get("as_template")
        ]
        kinds = list(await session.scalars(sa.select(MessageLog.kind)))
    assert resends == []
    assert kinds.count("invoice") == 1
    assert (await entry_of(sessions, entry.id)).status is DeliveryStatus(reached)
    assert await alerts(sessions) == []


async def test_progress_in_words(
    sessions: SessionFactory, sent: tuple[Invoice, MessageLog]
) -> None:
    _, entry = sent
    assert delivery.progress(None) is None
    assert delivery.progress(entry) == "sent, not yet on the customer's phone"
    entry.status, entry.error_code = DeliveryStatus.FAILED, "131000"
    assert delivery.progress(entry) == f"not delivered: {delivery.UNAVAILABLE}"
    entry.error_code = "131026"
    assert "may not be on WhatsApp" in (delivery.progress(entry) or "")
    entry.error_code = "²"  # whatever a provider sent: words, not a crash
    assert delivery.progress(entry) == f"not delivered: {delivery.REFUSED}"


async def test_the_window_is_open_for_24_hours_after_the_last_message_in(
    sessions: SessionFactory, sent: tuple[Invoice, MessageLog]
) -> None:
    """As the sender sees it: a message to send, and when its recipient last wrote to us."""
    _, entry = sent

    async def window_open(session: AsyncSession) -> bool:
        to_send = await repository.to_send(session, entry.id)
        assert to_send is not None
        return notifications.in_window(to_send.last_inbound_at, window_seconds=60)

    async with sessions() as session, session.begin():
        assert not await window_open(session)
        await notifications.log_inbound(session, phone=CUSTOMER, kind="text", wamid="wamid.IN1")
        assert await window_open(session)
        await session.execute(
            sa.update(MessageLog).values(created_at=utcnow() - timedelta(seconds=61))
        )
        assert not await window_open(session)


# Many forward statuses at once (what the webhook applies in its own transaction)


async def advance(sessions: SessionFactory, *moves: tuple[str, str]) -> set[tuple[str, str]]:
    async with sessions() as session, session.begin():
        return await delivery.advance_many(
            session, [(wamid, status, utcnow()) for wamid, status in moves]
        )


async def test_many_statuses_move_each_message_to_its_highest_and_never_back(
    sessions: SessionFactory,
) -> None:
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, customer_phone=CUSTOMER)
        first = await logged(session, invoice, wamid="wamid.M1")
        second = await logged(session, invoice, wamid="wamid.M2")
        failed = await logged(session, invoice, wamid="wamid.M3")
        await session.execute(
            sa.update(MessageLog)
            .where(MessageLog.id == failed.id)
            .values(status=DeliveryStatus.FAILED)
        )

    known = await advance(
        sessions,
        ("wamid.M1", "read"),
        ("wamid.M1", "sent"),  # in the same batch, after the read: the read stands
        ("wamid.M2", "delivered"),
        ("wamid.M3", "delivered"),  # a failed message stays failed
        ("wamid.UNKNOWN", "read"),  # not recorded yet: left for later
    )

    assert known == {
        ("wamid.M1", "read"),
        ("wamid.M1", "sent"),
        ("wamid.M2", "delivered"),
        ("wamid.M3", "delivered"),
    }
    assert (await entry_of(sessions, first.id)).status is DeliveryStatus.READ
    assert (await entry_of(sessions, second.id)).status is DeliveryStatus.DELIVERED
    assert (await entry_of(sessions, failed.id)).status is DeliveryStatus.FAILED

    assert await advance(sessions, ("wamid.M1", "delivered"), ("wamid.M2", "sent")) == {
        ("wamid.M1", "delivered"),
        ("wamid.M2", "sent"),
    }
    assert (await entry_of(sessions, first.id)).status is DeliveryStatus.READ
    assert (await entry_of(sessions, second.id)).status is DeliveryStatus.DELIVERED


async def test_many_statuses_leave_failures_and_unknown_names_to_the_one_by_one_path(
    sessions: SessionFactory, sent: tuple[Invoice, MessageLog]
) -> None:
    _, entry = sent
    assert await advance(sessions, ("wamid.SENT1", "failed"), ("wamid.SENT1", "deleted")) == set()
    assert (await entry_of(sessions, entry.id)).status is DeliveryStatus.SENT
    assert await alerts(sessions) == []


# record_sent, from each state a message can be in when its send is answered: (status before,
# provider id before, error before) → (status after, error after).
ACCEPTED_FROM = [
    pytest.param(DeliveryStatus.QUEUED, None, None, DeliveryStatus.SENT, None, id="queued"),
    # An operator's `outbox retry` of a send that failed before WhatsApp ever took it.
    pytest.param(DeliveryStatus.FAILED, None, "131000", DeliveryStatus.SENT, None, id="restart"),
    # Failed after WhatsApp took an earlier copy: the failure stands.
    pytest.param(
        DeliveryStatus.FAILED, "wamid.OLD", "131047", DeliveryStatus.FAILED, "131047", id="failed"
    ),
    # Statuses only move forward.
    pytest.param(
        DeliveryStatus.DELIVERED, "wamid.OLD", None, DeliveryStatus.DELIVERED, None, id="delivered"
    ),
    pytest.param(DeliveryStatus.READ, "wamid.OLD", None, DeliveryStatus.READ, None, id="read"),
]


@pytest.mark.parametrize(
    ("before", "wamid_before", "error_before", "after", "error"), ACCEPTED_FROM
)
async def test_an_accepted_send_is_recorded_from_every_state(
    session: AsyncSession,
    before: DeliveryStatus,
    wamid_before: str | None,
    error_before: str | None,
    after: DeliveryStatus,
    error: str | None,
) -> None:
    invoice = await factories.invoice(session)
    entry = await logged(session, invoice)
    await session.execute(
        sa.update(MessageLog)
        .where(MessageLog.id == entry.id)
        .values(status=before, provider_message_id=wamid_before, error_code=error_before)
    )
    at = utcnow()

    accepted = await repository.record_sent(
        session, entry.id, provider_id="wamid.NEW", template_name="invoice_new", at=at
    )

    assert accepted == repository.Accepted("invoice", invoice.id)
    await session.refresh(entry)
    assert (entry.status, entry.error_code) == (after, error)
    assert (entry.provider_message_id, entry.template_name) == ("wamid.NEW", "invoice_new")
    assert entry.status_at == at


async def test_recording_a_send_of_no_such_message_changes_nothing(session: AsyncSession) -> None:
    assert (
        await repository.record_sent(
            session, uuid.uuid4(), provider_id="wamid.NEW", template_name=None, at=utcnow()
        )
        is None
    )
