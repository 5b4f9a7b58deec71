"""`invoiceiq outbox list|retry`: masked listing, reviving dead rows, refusing dead STK pushes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice
from invoiceiq.db.uow import unit_of_work
from invoiceiq.outbox import repository
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.payments.service import PUSH_TOPIC
from invoiceiq.worker import GiveUp, Worker, WorkerOptions
from support import factories
from support.cli import Invoke, with_sessions

PHONE = "254712345678"
MASKED = "2547•••••678"
SECRET_TEXT = "the zebra cake, call me on 0712345678"


def add_row(
    database_url: str,
    topic: str,
    payload: dict[str, Any],
    *,
    status: OutboxStatus = OutboxStatus.PENDING,
    last_error: str | None = None,
    attempts: int = 0,
) -> uuid.UUID:
    async def work(sessions: SessionFactory) -> uuid.UUID:
        row = OutboxMessage(
            topic=topic, payload=payload, status=status, last_error=last_error, attempts=attempts
        )
        async with unit_of_work(sessions) as session:
            session.add(row)
            await session.flush()
            return row.id

    return with_sessions(database_url, work)


def fetch(database_url: str, row_id: uuid.UUID) -> OutboxMessage:
    async def work(sessions: SessionFactory) -> OutboxMessage:
        async with sessions() as session:
            row = await repository.get(session, row_id)
        assert row is not None
        return row

    return with_sessions(database_url, work)


def snapshot(database_url: str) -> list[tuple[Any, ...]]:
    async def work(sessions: SessionFactory) -> list[tuple[Any, ...]]:
        async with sessions() as session:
            rows = await session.execute(
                sa.select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts).order_by(
                    OutboxMessage.id
                )
            )
            return [tuple(row) for row in rows]

    return with_sessions(database_url, work)


# list -----------------------------------------------------------------------------------------


def test_list_masks_numbers_and_leaves_message_text_out(cli: Invoke, database_url: str) -> None:
    inbound = add_row(
        database_url,
        "whatsapp.inbound",
        {"wamid": "wamid.ABC", "phone": PHONE, "kind": "text", "text": SECRET_TEXT},
    )
    send = add_row(
        database_url,
        "whatsapp.send",
        {"message_log_id": "5f0c1d2e-0000-4000-8000-000000000001"},
        status=OutboxStatus.DEAD,
        attempts=8,
        last_error=f"360dialog said 400 for +254 712 345 678\nretry later {PHONE}",
    )

    result = cli("outbox", "list")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "outbox: 1 pending, 0 running, 0 done, 1 dead" in out
    assert str(inbound) in out and str(send) in out
    assert "wamid=wamid.ABC" in out and "kind=text" in out and f"phone={MASKED}" in out
    assert "message_log_id=5f0c1d2e-0000-4000-8000-000000000001" in out
    assert "last error: 360dialog said 400 for +2547•••••678 retry later 2547•••••678" in out
    assert PHONE not in out and "712 345 678" not in out
    assert "zebra" not in out
    # Newest first.
    assert out.index(str(send)) < out.index(str(inbound))


def test_list_hides_the_number_inside_wamids_and_checkout_ids(
    cli: Invoke, database_url: str
) -> None:
    # A wamid is base64 of the recipient's number ("MjU0NzEyMzQ1Njc4" is 254712345678), and a
    # CheckoutRequestID ends with the payer's national number.
    wamid = "wamid.HBgMMjU0NzEyMzQ1Njc4FQIAEhggQjdBNkE0RkYwRDM2"
    add_row(database_url, "whatsapp.status", {"message_id": wamid, "status": "failed"})
    add_row(
        database_url,
        "mpesa.orphan_callback",
        {"external_id": "ws_CO_14032025102201456712345678:0"},
    )

    result = cli("outbox", "list")

    assert result.exit_code == 0, result.output
    assert "message_id=…NkE0RkYwRDM2" in result.stdout
    assert "MjU0NzEyMzQ1Njc4" not in result.stdout
    assert "external_id=ws_CO_14032025102201456••••••678:0" in result.stdout
    assert "712345678" not in result.stdout


def test_list_dead_shows_only_dead_rows_and_honours_the_limit(
    cli: Invoke, database_url: str
) -> None:
    pending = add_row(database_url, "whatsapp.send", {"message_log_id": "a"})
    dead = [
        add_row(database_url, "mpesa.reconcile", {"payment_id": f"p{n}"}, status=OutboxStatus.DEAD)
        for n in range(3)
    ]

    everything = cli("outbox", "list", "--dead")
    assert everything.exit_code == 0, everything.output
    assert all(str(row) in everything.stdout for row in dead)
    assert str(pending) not in everything.stdout

    one = cli("outbox", "list", "--dead", "--limit", "1")
    assert one.exit_code == 0, one.output
    assert sum(str(row) in one.stdout for row in dead) == 1


def test_list_on_an_empty_outbox_says_so(cli: Invoke) -> None:
    result = cli("outbox", "list", "--dead")
    assert result.exit_code == 0, result.output
    assert "no dead rows" in result.stdout


def test_list_refuses_a_limit_below_one(cli: Invoke) -> None:
    result = cli("outbox", "list", "--limit", "0")
    assert result.exit_code == 2
    assert "--limit" in result.output


# retry ----------------------------------------------------------------------------------------


def test_retry_revives_a_dead_row(cli: Invoke, database_url: str) -> None:
    row_id = add_row(
        database_url, "whatsapp.send", {"message_log_id": "a"}, status=OutboxStatus.DEAD, attempts=8
    )

    result = cli("outbox", "retry", str(row_id))

    assert result.exit_code == 0, result.output
    assert f"revived {row_id} (whatsapp.send)" in result.stdout
    row = fetch(database_url, row_id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)


def add_payment(database_url: str) -> tuple[str, str]:
    """An invoice with an open payment attempt; (payment id, invoice number)."""

    async def work(sessions: SessionFactory) -> tuple[str, str]:
        async with unit_of_work(sessions) as session:
            payment = await factories.payment(session)
            invoice = await session.get(Invoice, payment.invoice_id)
            assert invoice is not None
            return str(payment.id), invoice.number

    return with_sessions(database_url, work)


def test_retry_refuses_a_dead_stk_push_and_names_the_payments_query(
    cli: Invoke, database_url: str
) -> None:
    payment_id, number = add_payment(database_url)
    row_id = add_row(
        database_url, PUSH_TOPIC, {"payment_id": payment_id}, status=OutboxStatus.DEAD, attempts=8
    )
    before = snapshot(database_url)

    result = cli("outbox", "retry", str(row_id))

    assert result.exit_code == 1
    assert "Refused" in result.stderr
    assert "PIN prompt" in result.stderr
    assert f"invoiceiq payments query {number}`" in result.stderr
    assert snapshot(database_url) == before


def test_the_push_refusal_holds_without_a_payment_to_name(cli: Invoke, database_url: str) -> None:
    row_id = add_row(database_url, PUSH_TOPIC, {"payment_id": "lost"}, status=OutboxStatus.DEAD)

    result = cli("outbox", "retry", str(row_id))

    assert result.exit_code == 1
    assert "invoiceiq payments query INVOICE_NUMBER" in result.stderr
    assert fetch(database_url, row_id).status is OutboxStatus.DEAD


@pytest.mark.parametrize("status", [OutboxStatus.PENDING, OutboxStatus.DONE])
def test_retry_refuses_a_row_that_is_not_dead(
    cli: Invoke, database_url: str, status: OutboxStatus
) -> None:
    row_id = add_row(database_url, "whatsapp.send", {"message_log_id": "a"}, status=status)
    before = snapshot(database_url)

    result = cli("outbox", "retry", str(row_id))

    assert result.exit_code == 1
    assert f"is {status.value}, not dead" in result.stderr
    assert snapshot(database_url) == before


def test_retry_of_an_unknown_or_malformed_id_is_a_message(cli: Invoke, database_url: str) -> None:
    unknown = cli("outbox", "retry", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert "No outbox row" in unknown.stderr

    malformed = cli("outbox", "retry", "not-a-uuid")
    assert malformed.exit_code == 2
    assert "not an outbox row id" in malformed.stderr
    assert "Traceback" not in malformed.output
    assert snapshot(database_url) == []


def test_a_revived_row_is_performed_by_the_worker(cli: Invoke, database_url: str) -> None:
    """The whole loop: a handler gives up, the operator retries, the next run succeeds."""
    calls: list[str] = []
    fail = True

    async def handler(row: ClaimedRow) -> None:
        calls.append(row.topic)
        if fail:
            raise GiveUp("360dialog rejected the message")

    async def drain(sessions: SessionFactory) -> None:
        options = WorkerOptions(lease=2, max_attempts=3, poll_interval=0.05, backoff_base=0.05)
        await Worker(sessions, {"whatsapp.send": handler}, options).run_until_idle()

    row_id = add_row(database_url, "whatsapp.send", {"message_log_id": "a"})
    with_sessions(database_url, drain)
    assert fetch(database_url, row_id).status is OutboxStatus.DEAD

    assert cli("outbox", "retry", str(row_id)).exit_code == 0
    fail = False
    with_sessions(database_url, drain)

    assert fetch(database_url, row_id).status is OutboxStatus.DONE
    assert calls == ["whatsapp.send", "whatsapp.send"]
