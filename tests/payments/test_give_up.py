"""Giving up on an attempt M-PESA never told us about (DESIGN §5, Reconciler).

A push whose answer was lost has no CheckoutRequestID, so it cannot be queried; if its callback
is lost too, the customer may have paid without our knowing. Such an attempt still ends FAILED
(the invoice stays payable), but it is flagged for review, the merchant is told once, and the
customer is told we could not confirm it, not that it failed. A late success still wins.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from invoiceiq.cli import app as cli_app
from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import MessageLog, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.client import StkQueryResult
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import messages, repository, review, service, success
from invoiceiq.payments.cli import render_review
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.web import service as web_service
from payments.flows import (
    CUSTOMER,
    FAILED,
    MERCHANT_RECEIPT,
    RECEIPT,
    REVIEW,
    answer,
    callback_body,
    configure,
    drained,
    invoice_sent,
    post_callback,
    tap,
    the_invoice,
    the_payment,
    wait_prompt,
    with_text,
)
from support import factories
from support.app_server import running_app

DO_NOT_PAY_AGAIN = "please do not pay again"
COULD_NOT_CONFIRM = "We could not confirm whether your M-PESA payment"


class NoDaraja:
    """Daraja must not be called at all."""

    async def stk_push(self, **_: Any) -> Any:
        raise AssertionError("pushed again")

    async def stk_query(self, checkout_request_id: str) -> Any:
        raise AssertionError("queried")


class PendingDaraja(NoDaraja):
    """M-PESA keeps saying "being processed"."""

    async def stk_query(self, checkout_request_id: str) -> Any:
        return StkQueryResult("pending", None, None)


def reconcile_row(payment: Payment) -> ClaimedRow:
    payload = {"payment_id": str(payment.id), "round": 4}
    return ClaimedRow(uuid.uuid4(), service.RECONCILE_TOPIC, payload, 1, "t")


async def outbound(sessions: SessionFactory) -> list[tuple[str, str, str]]:
    """(phone, kind, text) of every message queued, oldest first."""
    async with sessions() as session:
        logs = await session.scalars(sa.select(MessageLog).order_by(MessageLog.created_at))
        return [(log.phone, log.kind, (log.request or {}).get("text", "")) for log in logs]


async def test_a_push_never_heard_of_is_flagged_and_the_customer_not_told_to_just_pay_again(
    sessions: SessionFactory, settings: Settings
) -> None:
    pushed = utcnow() - timedelta(seconds=settings.reconcile_give_up + 5)
    async with unit_of_work(sessions) as session:
        merchant = await factories.merchant(session)
        invoice = await factories.invoice(session, merchant=merchant)
        payment = await factories.payment(session, invoice=invoice, push_sent_at=pushed)
    jobs = PaymentJobs(sessions=sessions, daraja=NoDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.reconcile(reconcile_row(payment))
    await jobs.reconcile(reconcile_row(payment))  # run again (at least once): nothing new

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        listed = render_review(await repository.flagged(session))
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NO_RESPONSE
    assert fresh.needs_review and fresh.review_reason == messages.OUTCOME_UNKNOWN_REASON
    assert str(payment.id) in listed and "push outcome unknown" in listed
    sent = {(phone, kind): text for phone, kind, text in await outbound(sessions)}
    assert len(sent) == 2  # each told once, whatever the re-run
    assert set(sent) == {(CUSTOMER, "payment_unconfirmed"), (merchant.phone, "review_alert")}
    alert = sent[(merchant.phone, "review_alert")]
    notice = sent[(CUSTOMER, "payment_unconfirmed")]
    assert invoice.number in alert and "may have paid" in alert
    assert COULD_NOT_CONFIRM in notice and DO_NOT_PAY_AGAIN in notice
    assert "confirmation SMS" in notice and FAILED not in notice
    # The invoice page says the same, not "did not go through".
    state = web_service.payment_state(fresh)
    assert state is not None and "do not pay again" in state["message"]
    assert FAILED not in state["message"]


@pytest.mark.parametrize("case", ["queried but never answered", "never pushed"])
async def test_an_attempt_given_up_otherwise_fails_as_before(
    sessions: SessionFactory, settings: Settings, case: str
) -> None:
    long_ago = utcnow() - timedelta(seconds=settings.reconcile_give_up + 5)
    values: dict[str, Any] = (
        {"checkout_request_id": "ws_CO_gone", "push_sent_at": long_ago}
        if case == "queried but never answered"
        else {"created_at": long_ago}
    )
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(session, **values)
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.reconcile(reconcile_row(payment))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NO_RESPONSE and not fresh.needs_review
    sent = await outbound(sessions)
    assert [kind for _, kind, _ in sent] == ["payment_failed", "payment_failed"]
    assert all(FAILED in text for _, _, text in sent)


async def test_an_open_attempt_flagged_for_another_amount_is_given_up_unconfirmed(
    sessions: SessionFactory, settings: Settings
) -> None:
    """Its callback said paid (for another amount) and M-PESA's query never answered: the
    customer may have paid, so they are not told it "did not go through"."""
    pushed = utcnow() - timedelta(seconds=settings.reconcile_give_up + 5)
    flag = "M-PESA reported KSh 1, the attempt was for KSh 1,500"
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(
            session,
            checkout_request_id="ws_CO_odd",
            push_sent_at=pushed,
            needs_review=True,
            review_reason=flag,
        )
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.reconcile(reconcile_row(payment))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NO_RESPONSE and fresh.needs_review
    assert fresh.review_reason == f"{flag}; {messages.CLAIM_UNCONFIRMED_REASON}"
    customer = [text for phone, kind, text in await outbound(sessions) if phone == CUSTOMER]
    assert len(customer) == 1 and COULD_NOT_CONFIRM in customer[0]
    assert FAILED not in customer[0]


async def test_a_success_after_giving_up_on_a_push_never_heard_of_still_pays(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings: dict[str, Any] = {
        "reconcile_after": 0.3,
        "reconcile_give_up": 4,
        "provider_timeout": 1,
    }
    async with running_app(database_url, **timings) as app:
        sent = await invoice_sent(app)
        # Daraja's answer to the push comes after the client stopped waiting, and the
        # callback is lost: the customer pays, and the app hears nothing at all.
        await configure(
            app,
            faults__daraja__timeout_after=1.0,
            timeout_hold_s=2,
            faults__callbacks__drop=1.0,
        )
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")
        given_up = await the_payment(
            database_url, lambda p: p.status is PaymentStatus.FAILED, timeout=30
        )
        await configure(app, faults__daraja__timeout_after=0.0)
        # The callback turns up after all; confirmed by STK Query, it pays the invoice.
        await post_callback(app, callback_body(prompt, receipt="ULATEBLIND"))
        paid = await the_payment(database_url, lambda p: p.status is PaymentStatus.SUCCESS)
        await drained(database_url)
        customer_inbox = await sent.customer.inbox()
        merchant_inbox = await sent.merchant.inbox()
        monkeypatch.chdir(tmp_path)  # no developer .env
        listed = await asyncio.to_thread(
            CliRunner().invoke, cli_app, ["payments", "review"], env={"DATABASE_URL": database_url}
        )
        listed_all = await asyncio.to_thread(
            CliRunner().invoke,
            cli_app,
            ["payments", "review", "--all"],
            env={"DATABASE_URL": database_url},
        )

    assert given_up.checkout_request_id is None and given_up.push_sent_at is not None
    assert given_up.result_code == repository.NO_RESPONSE and given_up.needs_review
    assert paid.id == given_up.id and paid.receipt_number == "ULATEBLIND"  # FAILED → SUCCESS
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID
    [notice] = with_text(customer_inbox, COULD_NOT_CONFIRM)
    assert DO_NOT_PAY_AGAIN in notice and not with_text(customer_inbox, FAILED)
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    [alert] = with_text(merchant_inbox, REVIEW)
    assert sent.number in alert and "the customer may have paid" in alert
    assert not with_text(merchant_inbox, FAILED)
    assert len(with_text(merchant_inbox, MERCHANT_RECEIPT)) == 1
    # The question the flag asked ("did the customer pay?") has its answer: the review is
    # settled on its own, so the operator's list no longer shows it (the full history does).
    assert paid.reviewed_at is not None and "M-PESA confirmed the payment" in (
        paid.review_note or ""
    )
    assert listed.exit_code == 0 and str(paid.id) not in listed.output
    assert listed_all.exit_code == 0 and str(paid.id) in listed_all.output
    assert "push outcome unknown" in listed_all.output and CUSTOMER not in listed_all.output


@pytest.mark.parametrize("other_reason", [None, "the amount differed from the attempt's"])
async def test_a_late_success_settles_the_unknown_outcome_review_and_nothing_else(
    sessions: SessionFactory, settings: Settings, other_reason: str | None
) -> None:
    pushed = utcnow() - timedelta(seconds=settings.reconcile_give_up + 5)
    async with unit_of_work(sessions) as session:
        invoice = await factories.invoice(session)
        payment = await factories.payment(session, invoice=invoice, push_sent_at=pushed)
    jobs = PaymentJobs(sessions=sessions, daraja=NoDaraja(), settings=settings)  # type: ignore[arg-type]
    await jobs.reconcile(reconcile_row(payment))
    if other_reason is not None:
        async with unit_of_work(sessions) as session:
            flagged = await repository.get(session, payment.id)
            assert flagged is not None
            await review.flag(session, flagged, other_reason)

    async with unit_of_work(sessions) as session:
        given_up = await repository.get(session, payment.id)
        assert given_up is not None and given_up.status is PaymentStatus.FAILED
        assert await success.mark_success(
            session, settings, given_up, confirmed_by="callback", receipt="ULATE0001"
        )

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        still_listed = [p.id for p, _ in await repository.flagged(session)]
    assert fresh is not None and fresh.status is PaymentStatus.SUCCESS and fresh.needs_review
    if other_reason is None:
        assert fresh.reviewed_at is not None and "M-PESA confirmed" in (fresh.review_note or "")
        assert payment.id not in still_listed
    else:  # another question is still open: the operator keeps it
        assert fresh.reviewed_at is None and payment.id in still_listed


async def test_a_success_claim_m_pesa_will_not_confirm_is_given_up_as_unconfirmed(
    database_url: str,
) -> None:
    """The callback says paid, but every STK Query fails (throttled) until RECONCILE_GIVE_UP.
    The confirmation, not the reconciler, settles it: flagged for review (the merchant told),
    and the customer told we could not confirm it, never that it "did not go through" (which
    invites a customer who paid to pay twice). The attempt does not stay open: the invoice and
    the phone are free again."""
    timings: dict[str, Any] = {"reconcile_after": 0.3, "reconcile_give_up": 3}
    async with running_app(database_url, **timings) as app:
        sent = await invoice_sent(app)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await the_payment(database_url, lambda p: p.checkout_request_id is not None)
        await configure(app, faults__daraja__spike_arrest=1.0)  # every query from now on
        await answer(app, prompt, "accept")
        given_up = await the_payment(database_url, lambda p: p.needs_review, timeout=30)
        await drained(database_url, timeout=30)
        settled = await the_payment(database_url, lambda p: True)
        customer_inbox = await sent.customer.inbox()
        merchant_inbox = await sent.merchant.inbox()

    assert given_up.review_reason == messages.CLAIM_UNCONFIRMED_REASON
    assert settled.status is PaymentStatus.FAILED and settled.receipt_number is None
    assert settled.result_code == repository.NO_RESPONSE
    assert service.outcome_unknown(settled)  # the invoice page says "do not pay again" too
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.SENT
    [notice] = with_text(customer_inbox, COULD_NOT_CONFIRM)
    assert DO_NOT_PAY_AGAIN in notice
    assert not with_text(customer_inbox, FAILED) and not with_text(customer_inbox, RECEIPT)
    assert not with_text(merchant_inbox, FAILED)
    [alert] = with_text(merchant_inbox, REVIEW)
    assert sent.number in alert
