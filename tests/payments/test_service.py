"""Payment rules at the service level, on both databases: the cases the end-to-end tests reach
only by luck of timing (a re-run push handler, a reused receipt, a resolved review flagged anew)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from invoiceiq.config import Settings
from invoiceiq.customers import service as customer_service
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, MessageLog, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.client import StkPushAccepted, StkQueryResult
from invoiceiq.mpesa.schemas import StkCallback, parse_callback
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import messages, repository, review, service, settlement, success
from invoiceiq.payments.cli import render_review
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.payments.states import PaymentStatus
from payments.flows import CUSTOMER, callback_body
from support import factories


class NoDaraja:
    """Daraja must not be called at all."""

    async def stk_push(self, **_: Any) -> Any:
        raise AssertionError("pushed again")

    async def stk_query(self, checkout_request_id: str) -> Any:
        raise AssertionError("queried")


def prompt_of(payment: Payment, checkout_request_id: str = "ws_CO_1") -> dict[str, Any]:
    return {
        "checkout_request_id": checkout_request_id,
        "merchant_request_id": "1-1",
        "phone": payment.phone,
        "amount": payment.amount_cents // 100,
    }


async def kinds(session: AsyncSession) -> list[str]:
    return list(await session.scalars(sa.select(MessageLog.kind).order_by(MessageLog.created_at)))


def push_row(payment: Payment, *, attempts: int) -> ClaimedRow:
    """The attempt's `mpesa.stk_push` row as a worker claims it, on its `attempts`-th run."""
    return ClaimedRow(
        uuid.uuid4(), service.PUSH_TOPIC, {"payment_id": str(payment.id)}, attempts, "t"
    )


async def test_a_push_re_run_after_push_sent_at_never_pushes(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(session, push_sent_at=utcnow())
    jobs = PaymentJobs(sessions=sessions, daraja=NoDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.push(push_row(payment, attempts=2))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.INITIATED


@pytest.mark.parametrize("status", [InvoiceStatus.PAID, InvoiceStatus.CANCELLED])
async def test_no_push_for_an_invoice_paid_or_cancelled_before_it_went_out(
    sessions: SessionFactory, settings: Settings, status: InvoiceStatus
) -> None:
    """A late success of an earlier attempt paid the invoice between the tap and the push: a
    prompt now could only charge the customer twice. The attempt is withdrawn, nobody told."""
    async with unit_of_work(sessions) as session:
        invoice = await factories.invoice(session, status=status)
        payment = await factories.payment(session, invoice=invoice)
    jobs = PaymentJobs(sessions=sessions, daraja=NoDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.push(push_row(payment, attempts=1))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        sent = await kinds(session)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
    assert fresh.result_code == repository.NOT_PAYABLE and fresh.push_sent_at is None
    assert sent == []


async def test_a_push_already_sent_is_not_withdrawn_when_the_invoice_is_paid(
    sessions: SessionFactory, settings: Settings
) -> None:
    """Its prompt may be up: the reconciler settles it, as any pushed attempt."""
    async with unit_of_work(sessions) as session:
        invoice = await factories.invoice(session, status=InvoiceStatus.PAID)
        payment = await factories.payment(session, invoice=invoice, push_sent_at=utcnow())
    jobs = PaymentJobs(sessions=sessions, daraja=NoDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.push(push_row(payment, attempts=2))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.INITIATED


class AcceptingDaraja(NoDaraja):
    """Daraja takes the push and answers with a known CheckoutRequestID."""

    def __init__(self) -> None:
        self.pushes = 0

    async def stk_push(self, **_: Any) -> Any:
        self.pushes += 1
        return StkPushAccepted("1-1", "ws_CO_EARLY", "0", None)


async def test_an_early_callback_that_cannot_be_applied_keeps_the_push_answer(
    sessions: SessionFactory, settings: Settings
) -> None:
    """A callback stored before the push's answer is applied with it; should it fail, the
    CheckoutRequestID is kept all the same (the push is never sent again, so losing it would
    leave the attempt impossible to query) and the customer still told to check their phone."""
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(session)
        assert await inbox.record(session, "mpesa", "ws_CO_EARLY:0", {"Body": "unreadable"})
    jobs = PaymentJobs(sessions=sessions, daraja=AcceptingDaraja(), settings=settings)  # type: ignore[arg-type]

    await jobs.push(push_row(payment, attempts=1))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        early = await inbox.get(session, "mpesa", "ws_CO_EARLY:0")
        sent = await kinds(session)
    assert fresh is not None and fresh.checkout_request_id == "ws_CO_EARLY"
    assert fresh.status is PaymentStatus.INITIATED
    assert early is not None and early.processed_at is None
    assert sent == ["pay_check_phone"]


async def test_the_cooldown_counts_prompts_not_refused_pushes(
    session: AsyncSession, settings: Settings
) -> None:
    invoice = await factories.invoice(session)
    await factories.payment(
        session,
        invoice=invoice,
        status=PaymentStatus.FAILED,
        result_code="busy",
        push_sent_at=utcnow(),
    )
    assert (
        await service.start_payment(session, settings, invoice=invoice, phone=CUSTOMER)
    ).outcome == "started"

    other = await factories.invoice(session, merchant=None, amount_cents=invoice.amount_cents)
    result = await service.start_payment(session, settings, invoice=other, phone=CUSTOMER)
    # The first invoice's attempt is still open on this phone: wait for its outcome.
    assert result.outcome == "wait" and result.wait_seconds >= 5


@pytest.mark.parametrize(
    ("values", "counted"),
    [
        ({"result_code": "no_response", "push_sent_at": "pushed"}, True),  # answer lost
        ({"result_code": "1032", "checkout_request_id": "ws_CO_x", "push_sent_at": "pushed"}, True),
        ({"result_code": "busy", "push_sent_at": "pushed"}, False),  # Daraja refused it
        ({"result_code": "not_payable"}, False),  # never pushed
        ({"result_code": "no_response"}, False),  # given up before its push went out
    ],
    ids=["answer lost", "answered", "refused", "never pushed", "given up unpushed"],
)
async def test_prompts_that_may_have_been_raised_count_for_the_limits(
    session: AsyncSession, values: dict[str, Any], counted: bool
) -> None:
    """The cooldown and the page's prompts-per-invoice limit count every push that may have
    raised a PIN prompt: one whose answer was lost most likely did."""
    invoice = await factories.invoice(session)
    pushed = utcnow() - timedelta(seconds=30)
    values = {k: (pushed if v == "pushed" else v) for k, v in values.items()}
    await factories.payment(session, invoice=invoice, status=PaymentStatus.FAILED, **values)
    since = utcnow() - timedelta(hours=1)

    last = await repository.last_attempt_at(session, phone=CUSTOMER, amount_cents=150_000)
    times = await repository.prompt_times_since(session, invoice.id, since)

    assert (last is not None) is counted and len(times) == int(counted)


async def test_the_cooldown_runs_from_the_last_prompt(
    session: AsyncSession, settings: Settings
) -> None:
    invoice = await factories.invoice(session)
    await factories.payment(
        session,
        invoice=invoice,
        status=PaymentStatus.FAILED,
        result_code="1032",
        checkout_request_id="ws_CO_cool",
        push_sent_at=utcnow() - timedelta(seconds=30),
    )
    result = await service.start_payment(session, settings, invoice=invoice, phone=CUSTOMER)

    assert result.outcome == "wait"
    assert settings.pay_cooldown - 31 <= result.wait_seconds <= settings.pay_cooldown - 29
    # The tapper is told why: M-PESA's pause between two payments of one amount.
    [reply] = await service.tap_to_pay(session, settings, phone=CUSTOMER, number=invoice.number)
    assert reply.text.startswith("M-PESA needs a pause between two payments of the same amount")
    assert reply.text.endswith("seconds, then tap Pay again.")
    assert reply.buttons == ((f"pay:{invoice.number}", "Pay with M-PESA"),)  # to tap after it


async def test_orphan_successes_match_only_pushes_that_may_have_prompted(
    session: AsyncSession,
) -> None:
    since = utcnow() - timedelta(minutes=5)
    pushed = utcnow() - timedelta(seconds=10)
    refused = await factories.payment(
        session, status=PaymentStatus.FAILED, result_code="busy", push_sent_at=pushed
    )
    open_ = await factories.payment(session, push_sent_at=pushed)
    given_up = await factories.payment(
        session, status=PaymentStatus.FAILED, result_code="no_response", push_sent_at=pushed
    )

    found = await repository.orphan_candidates(
        session, phone=CUSTOMER, amount_cents=150_000, since=since
    )

    assert {p.id for p in found} == {open_.id, given_up.id}
    assert refused.id not in {p.id for p in found}


def late_success(made: datetime | None) -> StkCallback:
    """A success whose CheckoutRequestID no attempt of ours stored (the push's answer was
    lost), paid at `made` by M-PESA's clock."""
    return StkCallback(
        "29115-1", "ws_CO_never_stored", "0", "ok", True, 1500, "ULATE00001", made, CUSTOMER
    )


async def test_an_orphan_success_is_matched_to_the_one_recent_push_that_could_own_it(
    session: AsyncSession, settings: Settings
) -> None:
    b = await factories.payment(session, push_sent_at=utcnow() - timedelta(seconds=20))

    found = await settlement.match_orphan_success(session, settings, late_success(utcnow()))

    assert found is not None and found.id == b.id
    assert found.checkout_request_id == "ws_CO_never_stored"


@pytest.mark.parametrize("same_invoice", [False, True], ids=["another invoice", "a retry"])
async def test_a_late_success_of_an_older_attempt_is_matched_only_if_for_the_same_invoice(
    session: AsyncSession, settings: Settings, same_invoice: bool
) -> None:
    """A, given up long before the window, may be whose the money is; B is the one recent
    attempt of the same phone and amount. For another invoice, matching B could pay the wrong
    one: a person decides. A retry of the same invoice is that invoice's money either way."""
    a_pushed = utcnow() - timedelta(hours=2)
    a = await factories.payment(
        session,
        status=PaymentStatus.FAILED,
        result_code="no_response",
        push_sent_at=a_pushed,
        completed_at=a_pushed + timedelta(seconds=settings.reconcile_give_up),
    )
    invoice = await session.get(Invoice, a.invoice_id) if same_invoice else None
    b = await factories.payment(
        session, invoice=invoice, push_sent_at=utcnow() - timedelta(seconds=20)
    )

    found = await settlement.match_orphan_success(session, settings, late_success(utcnow()))

    assert (found.id if found else None) == (b.id if same_invoice else None)
    fresh = await repository.get(session, b.id)
    assert fresh is not None
    assert (fresh.checkout_request_id is not None) is same_invoice


async def test_a_flag_is_told_once_per_reason_and_reopens_after_a_review(
    session: AsyncSession,
) -> None:
    payment = await factories.payment(session)

    await review.flag(session, payment, "reason one")
    await review.flag(session, payment, "reason one")
    await review.flag(session, payment, "reason two")
    await review.resolve(session, payment.id, note="looked at it")
    await review.flag(session, payment, "reason three")

    fresh = await repository.get(session, payment.id)
    assert fresh is not None
    assert fresh.needs_review and fresh.reviewed_at is None
    assert fresh.review_reason == "reason three"
    assert await kinds(session) == ["review_alert"] * 3


async def test_money_for_a_cancelled_invoice_is_recorded_flagged_and_told(
    session: AsyncSession, settings: Settings
) -> None:
    invoice = await factories.invoice(session, status=InvoiceStatus.CANCELLED)
    payment = await factories.payment(
        session, invoice=invoice, status=PaymentStatus.FAILED, result_code="no_response"
    )

    assert await success.mark_success(
        session, settings, payment, confirmed_by="query", receipt="UCANCEL123"
    )

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.SUCCESS  # FAILED → SUCCESS
    assert fresh.receipt_number == "UCANCEL123" and fresh.needs_review
    assert fresh.review_reason and "cancelled" in fresh.review_reason
    status = await session.scalar(sa.select(Invoice.status).where(Invoice.id == invoice.id))
    assert status is InvoiceStatus.CANCELLED
    assert sorted(await kinds(session)) == ["receipt", "review_alert"]
    # The payer's receipt says the invoice was cancelled, as the invoice page does.
    receipt = await session.scalar(
        sa.select(MessageLog.request).where(MessageLog.kind == "receipt")
    )
    assert receipt is not None and receipt["text"].startswith("Payment received.")
    assert (
        f"Invoice {invoice.number} was already cancelled when your payment arrived"
        in (receipt["text"])
    )
    assert "will contact you about it. Please do not pay again." in receipt["text"]
    # SUCCESS is final: a failure reported afterwards changes nothing.
    assert not await service.fail(session, settings, fresh, code="1032")
    assert not await success.mark_success(session, settings, fresh, confirmed_by="query")


@pytest.mark.parametrize("confirm", [False, True])
async def test_a_receipt_number_already_used_is_flagged_not_paid(
    session: AsyncSession, settings: Settings, confirm: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": confirm})
    await factories.payment(session, status=PaymentStatus.SUCCESS, receipt_number="UTAKEN1234")
    payment = await factories.payment(session, checkout_request_id="ws_CO_2")
    body = callback_body(prompt_of(payment, "ws_CO_2"), receipt="UTAKEN1234")

    with caplog.at_level(logging.INFO):
        assert await settlement.apply_callback(session, settings, parse_callback(body), body)

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.INITIATED
    assert fresh.receipt_number is None and fresh.needs_review
    # The review names the receipt; the log, which is no place for payment details, does not.
    assert fresh.review_reason == "receipt UTAKEN1234 was already used by another payment"
    [flagged] = [r for r in caplog.records if r.getMessage() == "payment flagged for review"]
    logged = getattr(flagged, "reason", None)
    assert logged == "its receipt number was already used by another payment"
    assert not [r for r in caplog.records if "UTAKEN1234" in str(vars(r))]
    invoice_status = await session.scalar(
        sa.select(Invoice.status).where(Invoice.id == payment.invoice_id)
    )
    assert invoice_status is InvoiceStatus.SENT


async def test_without_confirmation_a_success_callback_pays_at_once(
    session: AsyncSession, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": False})
    payment = await factories.payment(session, checkout_request_id="ws_CO_3")
    body = callback_body(prompt_of(payment, "ws_CO_3"), receipt="UNOW123456")

    await settlement.apply_callback(session, settings, parse_callback(body), body)

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.SUCCESS
    assert fresh.receipt_number == "UNOW123456" and fresh.confirmed_by == "callback"


async def test_only_a_matching_success_body_gives_its_receipt(session: AsyncSession) -> None:
    payment = await factories.payment(session, checkout_request_id="ws_CO_4")
    good = callback_body(prompt_of(payment, "ws_CO_4"), receipt="UGOOD12345")
    other_push = callback_body(prompt_of(payment, "ws_CO_5"), receipt="UOTHER1234")
    wrong_amount = callback_body(prompt_of(payment, "ws_CO_4"), amount=1, receipt="UCHEAP1234")

    receipts = []
    for body in (good, other_push, wrong_amount, callback_body(prompt_of(payment), code=1032)):
        payment.callback_body = body
        receipts.append(settlement.claimed_receipt(payment))

    assert receipts == ["UGOOD12345", None, None, None]


async def test_a_callback_from_outside_the_allowlist_is_confirmed_even_when_applied_late(
    session: AsyncSession, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": False})
    payment = await factories.payment(session, checkout_request_id="ws_CO_6")
    body = {
        **callback_body(prompt_of(payment, "ws_CO_6")),
        settlement.OUTSIDE_ALLOWLIST: True,
    }

    await settlement.apply_callback(session, settings, parse_callback(body), body)

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.INITIATED
    topics = await session.scalars(sa.select(OutboxMessage.topic))
    assert service.CONFIRM_TOPIC in set(topics)


async def test_an_unmatched_success_with_a_hashed_phone_is_kept(
    session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    body = callback_body(
        {"checkout_request_id": "ws_CO_7", "merchant_request_id": "7", "phone": "x", "amount": 5},
        phone="c0ffee" * 10,
    )

    with caplog.at_level(logging.WARNING):
        kept = await settlement.keep_unmatched_success(session, parse_callback(body), body)

    assert kept.phone == "unknown" and kept.needs_review and kept.invoice_id is None
    assert kept.amount_cents == 500 and kept.checkout_request_id == "ws_CO_7"
    # Logged as every flag is, so an alert on flags sees money that matched no attempt too.
    [flagged] = [r for r in caplog.records if r.getMessage() == "payment flagged for review"]
    assert getattr(flagged, "payment", None) == str(kept.id)
    listing = render_review([(kept, None)])
    assert "UNMATCHED SUCCESS" in listing and "FAILED" not in listing


@pytest.mark.parametrize(("pushed_ago", "told"), [(2, False), (40, True)])
async def test_a_tap_while_a_push_answer_is_lost_is_told_to_check_the_phone(
    session: AsyncSession, settings: Settings, pushed_ago: int, told: bool
) -> None:
    invoice = await factories.invoice(session)
    pushed_at = utcnow() - timedelta(seconds=pushed_ago)
    await factories.payment(session, invoice=invoice, push_sent_at=pushed_at)

    for _ in range(2):
        replies = await service.tap_to_pay(session, settings, phone=CUSTOMER, number=invoice.number)
        assert replies == []

    assert await kinds(session) == (["pay_check_phone"] if told else [])
    if told:
        # Not "enter your PIN in the prompt": nobody knows whether one came.
        text = await session.scalar(sa.select(MessageLog.request))
        assert text is not None and "We could not confirm that M-PESA sent the prompt" in str(text)
        assert "tap Pay with M-PESA again in about 5 min." in str(text)


class PendingDaraja(NoDaraja):
    """M-PESA keeps saying "being processed"."""

    async def stk_query(self, checkout_request_id: str) -> Any:
        return StkQueryResult("pending", None, None)


@pytest.mark.parametrize(("claimed_ago", "flagged"), [(0, False), (600, True)])
async def test_a_late_success_gets_its_own_time_to_be_confirmed(
    sessions: SessionFactory, settings: Settings, claimed_ago: int, flagged: bool
) -> None:
    long_ago = utcnow() - timedelta(seconds=settings.reconcile_give_up + 300)
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(
            session,
            status=PaymentStatus.FAILED,
            result_code="no_response",
            checkout_request_id="ws_CO_late",
            push_sent_at=long_ago,
        )
    jobs = PaymentJobs(sessions=sessions, daraja=PendingDaraja(), settings=settings)  # type: ignore[arg-type]
    claimed_at = (utcnow() - timedelta(seconds=claimed_ago)).isoformat()
    payload = {"payment_id": str(payment.id), "round": 0, "claimed_at": claimed_at}

    await jobs.confirm(ClaimedRow(uuid.uuid4(), service.CONFIRM_TOPIC, payload, 1, "t"))

    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        again = await session.scalar(
            sa.select(OutboxMessage.payload).where(OutboxMessage.topic == service.CONFIRM_TOPIC)
        )
    assert fresh is not None and fresh.needs_review is flagged
    assert (again is None) is flagged  # asked again later while there is time
    if again is not None:
        assert again["round"] == 1 and again["claimed_at"] == claimed_at


@pytest.mark.parametrize("ending", ["failed", "given up unconfirmed"])
async def test_a_payer_who_is_not_the_customer_is_sent_to_the_page_not_given_a_pay_button(
    sessions: SessionFactory, settings: Settings, ending: str
) -> None:
    """They paid from the invoice page with another number: the Pay button checks the tapper
    is the invoice's customer and would refuse them, so their message links the page."""
    other = "254722000111"
    async with unit_of_work(sessions) as session:
        invoice = await factories.invoice(session)
        theirs = await factories.payment(session, invoice=invoice, phone=other)
    async with unit_of_work(sessions) as session:
        payment = await repository.get(session, theirs.id)
        assert payment is not None
        if ending == "failed":
            assert await service.fail(session, settings, payment, code="1032")
        else:
            reason = "push outcome unknown"
            assert await service.give_up_unconfirmed(session, settings, payment, reason)
    async with sessions() as session:
        [sent] = (
            await session.scalars(sa.select(MessageLog).where(MessageLog.phone == other))
        ).all()
    assert sent.request is not None
    assert not sent.request["buttons"] and "tap Pay" not in sent.request["text"]
    assert f"{settings.base_url}/i/{invoice.public_token}" in sent.request["text"]
    # Outside their window (they may never have written to us) only the template goes: its
    # "do not pay again" must still reach them, and its Pay button's refusal names the link.
    assert sent.request["template"]["name"] == sent.kind


@pytest.mark.parametrize("stopped", [False, True])
async def test_a_payment_from_another_number_tells_the_invoiced_customer_and_names_the_payer(
    sessions: SessionFactory, settings: Settings, stopped: bool
) -> None:
    """Paid from the page with another number: the payer gets the receipt, the customer on the
    invoice hears it is paid, not that they paid (else their chat ends at the invoice), unless
    they sent STOP; and the merchant is told which number paid."""
    payer = "254111000000"
    async with unit_of_work(sessions) as session:
        owner = await factories.merchant(session)
        invoice = await factories.invoice(session, merchant=owner, customer_name="Jane")
        if stopped:
            await customer_service.remember(
                session, merchant_id=owner.id, phone=CUSTOMER, name=None
            )
            assert await customer_service.opt_out(session, CUSTOMER)
        theirs = await factories.payment(
            session, invoice=invoice, phone=payer, checkout_request_id="ws_CO_page"
        )
    async with unit_of_work(sessions) as session:
        payment = await repository.get(session, theirs.id)
        assert payment is not None
        assert await success.mark_success(
            session, settings, payment, confirmed_by="callback", receipt="UAB12CD34E"
        )
    async with sessions() as session:
        sent = list(await session.scalars(sa.select(MessageLog).order_by(MessageLog.created_at)))
    by_phone = {(entry.phone, entry.kind): entry for entry in sent}
    assert set(by_phone) == {
        (payer, "receipt"),
        *([] if stopped else [(CUSTOMER, "invoice_paid")]),
        (owner.phone, "payment_received"),
    }
    if not stopped:
        notice = by_phone[(CUSTOMER, "invoice_paid")].request
        assert notice is not None and notice["template"]["name"] == "invoice_paid_by_other"
        assert "has been paid from another M-PESA number (2541•••••000)" in notice["text"]
        assert "Your payment" not in notice["text"] and "254111000000" not in notice["text"]
    told = by_phone[(owner.phone, "payment_received")].request
    assert told is not None
    assert "from 2541•••••000 (another number, from the invoice page)" in told["text"]
    assert "Jane" not in told["text"] and "2547•••••678" not in told["text"]
    assert "2541•••••000" in told["template"]["params"]


async def test_the_customer_paying_gets_one_receipt_and_is_named_to_the_merchant(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        owner = await factories.merchant(session)
        invoice = await factories.invoice(session, merchant=owner, customer_name="Jane")
        theirs = await factories.payment(session, invoice=invoice, checkout_request_id="ws_CO_1")
    async with unit_of_work(sessions) as session:
        payment = await repository.get(session, theirs.id)
        assert payment is not None
        assert await success.mark_success(session, settings, payment, confirmed_by="callback")
    async with sessions() as session:
        sent = list(await session.scalars(sa.select(MessageLog)))
    assert sorted((entry.phone, entry.kind) for entry in sent) == sorted(
        [(CUSTOMER, "receipt"), (owner.phone, "payment_received")]
    )
    [told] = [entry.request for entry in sent if entry.kind == "payment_received"]
    assert told is not None and "from Jane (2547•••••678)." in told["text"]


async def test_a_tap_while_another_number_pays_from_the_page_is_told_so(
    session: AsyncSession, settings: Settings
) -> None:
    invoice = await factories.invoice(session)
    await factories.payment(
        session, invoice=invoice, phone="254744000555", push_sent_at=utcnow() - timedelta(minutes=2)
    )

    [reply] = await service.tap_to_pay(session, settings, phone=CUSTOMER, number=invoice.number)

    assert reply.text.startswith(f"A payment prompt for invoice {invoice.number} was already sent")
    assert "2547•••••555" in reply.text and "254744000555" not in reply.text
    assert await kinds(session) == []  # no "check your phone" for a prompt on another phone


@pytest.mark.parametrize(
    ("started_ago", "words"),
    [
        (10, "An M-PESA prompt is still open on your phone"),
        (200, "We are still checking with M-PESA how your last payment went"),
    ],
)
@pytest.mark.parametrize("same_amount", [False, True])
async def test_a_tap_while_another_attempt_of_the_phone_is_open_says_why_it_waits(
    session: AsyncSession, settings: Settings, started_ago: int, words: str, same_amount: bool
) -> None:
    """Not "Please wait 5 seconds" again and again while M-PESA is being asked how the last
    attempt ended (from RECONCILE_AFTER until RECONCILE_GIVE_UP)."""
    elsewhere = await factories.invoice(session)
    started = utcnow() - timedelta(seconds=started_ago)
    await factories.payment(
        session, invoice=elsewhere, push_sent_at=started, checkout_request_id="ws_CO_open"
    )
    # The same amount: M-PESA's pause counts too (and is longer), but the prompt on the phone
    # is what the payer can do something about.
    amount = elsewhere.amount_cents if same_amount else 90_000
    invoice = await factories.invoice(session, merchant=None, amount_cents=amount)

    [reply] = await service.tap_to_pay(session, settings, phone=CUSTOMER, number=invoice.number)

    assert reply.kind == "pay_wait" and reply.text.startswith(words)
    waits_for_time = started_ago < settings.reconcile_after
    assert ("seconds" in reply.text) is waits_for_time
    # A button to tap when the time is up; none while M-PESA is asked (its answer will come).
    assert bool(reply.buttons) is waits_for_time


async def claimed_success(
    sessions: SessionFactory, settings: Settings, checkout_request_id: str, receipt: str
) -> Payment:
    """An attempt pushed 20 s ago whose success callback came and awaits confirmation."""
    async with unit_of_work(sessions) as session:
        pushed = utcnow() - timedelta(seconds=20)
        payment = await factories.payment(
            session, checkout_request_id=checkout_request_id, push_sent_at=pushed
        )
        paid = callback_body(prompt_of(payment, checkout_request_id), receipt=receipt)
        await settlement.apply_callback(session, settings, parse_callback(paid), paid)
    return payment


class AnsweringDaraja(NoDaraja):
    """M-PESA's query gives `answer` about any push."""

    def __init__(self, answer: StkQueryResult) -> None:
        self.answer = answer

    async def stk_query(self, checkout_request_id: str) -> Any:
        return self.answer


PAID = StkQueryResult("success", "0", "The service request is processed successfully.")
DENIED = StkQueryResult("failed", "1032", "Request cancelled by user")


async def test_a_failure_callback_leaves_a_success_being_confirmed_to_the_query(
    sessions: SessionFactory, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": True, "pay_cooldown": 0})
    payment = await claimed_success(sessions, settings, "ws_CO_8", "UCLAIM1234")
    async with unit_of_work(sessions) as session:
        # The same push reported again, cancelled: it contradicts the claim being confirmed.
        cancelled = callback_body(prompt_of(payment, "ws_CO_8"), code=1032)
        await settlement.apply_callback(session, settings, parse_callback(cancelled), cancelled)

    async with unit_of_work(sessions) as session:
        fresh = await repository.get(session, payment.id)
        assert fresh is not None and fresh.status is PaymentStatus.INITIATED
        assert await kinds(session) == []  # nobody told "did not go through, pay again"
        invoice = await session.get(Invoice, payment.invoice_id)
        assert invoice is not None
        tap = await service.start_payment(session, settings, invoice=invoice, phone=CUSTOMER)
        assert tap.outcome == "open"  # no second prompt while M-PESA is asked

    jobs = PaymentJobs(sessions=sessions, daraja=AnsweringDaraja(PAID), settings=settings)  # type: ignore[arg-type]
    payload = {"payment_id": str(payment.id), "round": 0, "claimed_at": utcnow().isoformat()}
    await jobs.confirm(ClaimedRow(uuid.uuid4(), service.CONFIRM_TOPIC, payload, 1, "t"))
    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        assert fresh is not None and fresh.status is PaymentStatus.SUCCESS
        assert fresh.receipt_number == "UCLAIM1234"
        assert await kinds(session) == ["receipt", "payment_received"]


async def test_payments_query_denying_a_success_claim_flags_it(
    sessions: SessionFactory, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": True})
    payment = await claimed_success(sessions, settings, "ws_CO_9", "UCLAIM5678")
    async with sessions() as session:
        invoice = await session.get(Invoice, payment.invoice_id)
    assert invoice is not None
    jobs = PaymentJobs(sessions=sessions, daraja=AnsweringDaraja(DENIED), settings=settings)  # type: ignore[arg-type]

    answer = await jobs.query_invoice(invoice.number)

    assert "FAILED" in answer
    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.needs_review
    assert fresh.review_reason == messages.CLAIM_DENIED_REASON


@pytest.mark.parametrize("lost", ["server gone", "connection refused"])
async def test_an_accepted_push_is_stored_once_the_database_answers_again(
    engine: AsyncEngine, sessions: SessionFactory, settings: Settings, lost: str
) -> None:
    async with unit_of_work(sessions) as session:
        payment = await factories.payment(session)
    failures = []

    def connection_lost(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # The database goes away once, as Daraja's answer is being stored.
        storing = statement.startswith("UPDATE payment") and "checkout_request_id" in statement
        if storing and not failures:
            failures.append(statement)
            if lost == "connection refused":  # as a pool reconnecting to a restarting server
                raise ConnectionRefusedError(111, "Connect call failed")
            raise OperationalError(statement, parameters, ConnectionError("reset"))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", connection_lost)
    daraja = AcceptingDaraja()
    jobs = PaymentJobs(sessions=sessions, daraja=daraja, settings=settings)  # type: ignore[arg-type]
    try:
        await jobs.push(push_row(payment, attempts=1))
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", connection_lost)

    assert failures and daraja.pushes == 1
    async with sessions() as session:
        fresh = await repository.get(session, payment.id)
        assert fresh is not None and fresh.checkout_request_id == "ws_CO_EARLY"
        assert await kinds(session) == ["pay_check_phone"]


async def test_taps_on_two_invoices_at_once_raise_one_prompt_on_the_phone(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with unit_of_work(sessions) as session:
        merchant = await factories.merchant(session)
        first = await factories.invoice(session, merchant=merchant, amount_cents=100_000)
        second = await factories.invoice(session, merchant=merchant, amount_cents=200_000)
    both_checked = asyncio.Event()
    checked = []

    async def tap(invoice: Invoice) -> str:
        async with unit_of_work(sessions) as session:
            fresh = await session.get(Invoice, invoice.id)
            assert fresh is not None
            started = await service.start_payment(session, settings, invoice=fresh, phone=CUSTOMER)
            checked.append(started.outcome)
            if len(checked) == 2:
                both_checked.set()
            # Held open a moment: the other tap checks while this one has not committed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both_checked.wait(), 0.5)
            return started.outcome

    outcomes = await asyncio.gather(tap(first), tap(second))

    assert sorted(outcomes) == ["started", "wait"]
    async with sessions() as session:
        open_attempts = await session.scalar(
            sa.select(sa.func.count())
            .select_from(Payment)
            .where(Payment.phone == CUSTOMER, Payment.status == PaymentStatus.INITIATED)
        )
    assert open_attempts == 1


async def test_a_failure_from_another_number_tells_the_merchant_who_it_was(
    session: AsyncSession, settings: Settings
) -> None:
    invoice = await factories.invoice(session)
    payment = await factories.payment(session, invoice=invoice, phone="254733000111")

    assert await service.fail(session, settings, payment, code="1032")

    to_merchant = await session.scalar(
        sa.select(MessageLog.request).where(
            MessageLog.kind == "payment_failed", MessageLog.phone != "254733000111"
        )
    )
    assert "from another number, on the invoice page" in str(to_merchant)
    assert "the payer cancelled the M-PESA prompt" in str(to_merchant)


async def test_a_callback_from_outside_the_allowlist_never_replaces_safaricoms(
    session: AsyncSession, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": True})
    payment = await factories.payment(session, checkout_request_id="ws_CO_11")
    genuine = callback_body(prompt_of(payment, "ws_CO_11"), receipt="UREAL12345")
    forged = {
        **callback_body(prompt_of(payment, "ws_CO_11"), receipt="UFAKE12345"),
        settlement.OUTSIDE_ALLOWLIST: True,
    }

    for body in (genuine, forged):
        await settlement.apply_callback(session, settings, parse_callback(body), body)

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and settlement.claimed_receipt(fresh) == "UREAL12345"
    assert fresh.needs_review and fresh.review_reason == settlement.OUTSIDE_DIFFERS_REASON


async def test_a_claim_from_outside_the_allowlist_does_not_hold_back_safaricoms_failure(
    session: AsyncSession, settings: Settings
) -> None:
    settings = settings.model_copy(update={"mpesa_confirm_callbacks": True})
    payment = await factories.payment(session, checkout_request_id="ws_CO_12")
    claim = {**callback_body(prompt_of(payment, "ws_CO_12")), settlement.OUTSIDE_ALLOWLIST: True}
    cancelled = callback_body(prompt_of(payment, "ws_CO_12"), code=1032)

    for body in (claim, cancelled):
        await settlement.apply_callback(session, settings, parse_callback(body), body)

    fresh = await repository.get(session, payment.id)
    assert fresh is not None and fresh.status is PaymentStatus.FAILED
