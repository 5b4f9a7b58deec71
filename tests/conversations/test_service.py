"""Chat handling on the database (both kinds): the guided flow's Edit, choosing among
same-named customers, commands typed mid-flow, `status` and `remind`.

Each message is handled as the webhook handles it (one transaction); the replies are read
back from the message log, as the worker would send them.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from invoiceiq.config import SignupMode
from invoiceiq.conversations import texts
from invoiceiq.conversations.schemas import IncomingMessage
from invoiceiq.conversations.service import handle_message
from invoiceiq.customers import service as customer_service
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Conversation, Invoice, MessageLog
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.merchants.states import MerchantStatus
from invoiceiq.notifications.models import DeliveryStatus, Direction
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.payments import messages as payment_messages
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.whatsapp import adapter, callbacks
from support import factories
from support.db import make_settings

MERCHANT = "254700000001"
CUSTOMER = "254712345678"


@dataclass
class Chat:
    sessions: SessionFactory
    database_url: str
    phone: str
    overrides: dict[str, object] = field(default_factory=dict)
    seen: int = 0

    async def say(self, text: str) -> list[Outbound]:
        return await self._handle(IncomingMessage(_wamid(), self.phone, "text", text=text))

    async def tap(self, button_id: str) -> list[Outbound]:
        return await self._handle(
            IncomingMessage(_wamid(), self.phone, "button", button_id=button_id)
        )

    async def _handle(self, message: IncomingMessage) -> list[Outbound]:
        settings = make_settings(database_url=self.database_url, **self.overrides)
        async with self.sessions() as session, session.begin():
            await handle_message(session, settings, message)
        return await self.replies()

    async def replies(self) -> list[Outbound]:
        """What was queued for this phone since the last look."""
        async with self.sessions() as session:
            logs = list(
                await session.scalars(
                    sa.select(MessageLog)
                    .where(
                        MessageLog.phone == self.phone,
                        MessageLog.direction == Direction.OUTBOUND,
                    )
                    .order_by(MessageLog.created_at)
                )
            )
        new, self.seen = logs[self.seen :], len(logs)
        return [Outbound.from_json(entry.request or {}) for entry in new]

    async def only(self, text: str) -> Outbound:
        [reply] = await self.say(text)
        return reply


def _wamid() -> str:
    return "wamid." + secrets.token_hex(12)


@pytest.fixture
async def merchant(sessions: SessionFactory, database_url: str) -> Chat:
    async with sessions() as session, session.begin():
        await merchant_service.set_business_name(
            session, phone=MERCHANT, name="Wanjiku Designs", signup=SignupMode.OPEN
        )
    return Chat(sessions, database_url, MERCHANT)


async def invoices(sessions: SessionFactory) -> list[Invoice]:
    async with sessions() as session:
        return list(await session.scalars(sa.select(Invoice).order_by(Invoice.created_at)))


def kinds(replies: list[Outbound]) -> list[str]:
    return [reply.kind for reply in replies]


async def summary_after(chat: Chat, *answers: str) -> Outbound:
    await chat.only("invoice")
    reply = None
    for answer in answers:
        reply = await chat.only(answer)
    assert reply is not None and reply.buttons
    return reply


def test_help_lists_every_command() -> None:
    for command in (
        "invoice",
        "invoice 0712345678 1500",
        "invoice Jane",
        "unpaid",
        "status INV",
        "remind INV",
        "cancel INV",
        "name ",
        "vat on",
        "vat off",
        "help",
    ):
        assert command in texts.HELP, command


# Edit -------------------------------------------------------------------------------------------


async def test_edit_changes_one_answer_and_keeps_the_others(
    merchant: Chat, sessions: SessionFactory
) -> None:
    first = await summary_after(merchant, "0712345678", "Jane", "500", "Cake")
    asked = await merchant.tap(first.buttons[1][0])  # Edit
    assert texts.FLOW_ASK_EDIT in asked[0].text
    second = await merchant.only("amount 900")
    assert "KSh 900" in second.text and "Jane" in second.text and "Cake" in second.text
    assert [title for _, title in second.buttons] == ["Send", "Edit", "Cancel"]
    stale = await merchant.tap(first.buttons[0][0])  # Send on the summary before the edit
    assert texts.FLOW_STALE in stale[0].text
    assert await invoices(sessions) == []
    assert kinds(await merchant.tap(second.buttons[0][0])) == ["confirmation"]
    assert kinds(await merchant.tap(second.buttons[0][0])) == ["reply"]  # stale: no invoice
    [invoice] = await invoices(sessions)
    assert invoice.amount_cents == 90_000 and invoice.customer_name == "Jane"
    assert invoice.description == "Cake" and invoice.customer_phone == CUSTOMER


async def test_edit_one_field_step_by_step_with_back(
    merchant: Chat, sessions: SessionFactory
) -> None:
    first = await summary_after(merchant, "0712345678", "Jane", "500", "Cake")
    await merchant.tap(first.buttons[1][0])
    assert "I can change" in (await merchant.only("colour")).text  # not a field: asked again
    assert "Now: Jane." in (await merchant.only("name")).text
    assert texts.FLOW_ASK_EDIT in (await merchant.only("back")).text  # choose again
    assert "Now: KSh 500." in (await merchant.only("amount")).text
    assert "at least KSh 1" in (await merchant.only("0")).text  # validated, asked again
    summary = await merchant.only("750")
    assert "KSh 750" in summary.text and "Jane" in summary.text
    await merchant.tap(summary.buttons[1][0])
    unchanged = await merchant.only("back")  # changed their mind: the same summary
    assert "KSh 750" in unchanged.text and unchanged.buttons
    await merchant.tap(unchanged.buttons[1][0])
    assert "phone number" in (await merchant.only("phone 12")).text.lower()
    renamed = await merchant.only("name skip")
    assert "Jane" not in renamed.text
    await merchant.tap(renamed.buttons[0][0])
    [invoice] = await invoices(sessions)
    assert invoice.customer_name is None and invoice.amount_cents == 75_000


async def test_back_from_a_summary_makes_its_buttons_stale(
    merchant: Chat, sessions: SessionFactory
) -> None:
    """The old summary shows KSh 1,500 for a logo; its Send must not issue what the merchant
    typed after going back (KSh 15,000 for a website)."""
    first = await summary_after(merchant, "0712345678", "skip", "1500", "Logo design")
    await merchant.only("back")
    await merchant.only("back")
    await merchant.only("15000")
    second = await merchant.only("Website")
    assert "KSh 15,000" in second.text

    stale = await merchant.tap(first.buttons[0][0])  # Send on the KSh 1,500 summary

    assert texts.FLOW_STALE in stale[0].text
    assert await invoices(sessions) == []
    assert kinds(await merchant.tap(second.buttons[0][0])) == ["confirmation"]
    [invoice] = await invoices(sessions)
    assert invoice.amount_cents == 1_500_000 and invoice.description == "Website"


@pytest.mark.parametrize("typed", ["send", "Send.", "yes", "Yes please"])
async def test_send_typed_on_the_summary_sends_it_once(
    merchant: Chat, sessions: SessionFactory, typed: str
) -> None:
    summary = await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    assert kinds(await merchant.say(typed)) == ["confirmation"]
    assert kinds(await merchant.say(typed)) == ["reply"]  # no summary any more: the help
    stale = await merchant.tap(summary.buttons[0][0])
    assert texts.FLOW_STALE in stale[0].text
    [invoice] = await invoices(sessions)
    assert invoice.amount_cents == 50_000 and invoice.description == "Cake"


async def test_the_summary_shows_the_vat_the_invoice_will_show(
    merchant: Chat, sessions: SessionFactory
) -> None:
    """VAT is on by default: the summary says what the invoice will (KSh 1,500 includes
    KSh 206.89 at 16 %); `vat off` typed at the summary shows at once, and the invoice follows."""
    summary = await summary_after(merchant, "0712345678", "skip", "1500", "Logo design")
    assert "Amount: KSh 1,500\nIncludes VAT (16%): KSh 206.89\nFor: Logo design" in summary.text
    replies = await merchant.say("vat off")
    assert replies[-1].buttons and "Includes VAT" not in replies[-1].text
    await merchant.tap(replies[-1].buttons[0][0])
    [invoice] = await invoices(sessions)
    assert invoice.vat_cents == 0


async def test_edit_typed_on_the_summary_asks_what_to_change(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    assert (await merchant.only("Edit")).text == texts.FLOW_ASK_EDIT
    assert "KSh 800" in (await merchant.only("amount 800")).text
    assert await invoices(sessions) == []


async def test_other_text_on_the_summary_says_what_to_tap(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    again = await merchant.only("Phone 0722000092")
    assert again.text.startswith(texts.FLOW_TAP_SUMMARY) and "KSh 500" in again.text
    assert [title for _, title in again.buttons] == ["Send", "Edit", "Cancel"]
    assert await invoices(sessions) == []


async def test_a_tap_after_send_does_not_say_nothing_was_sent(
    merchant: Chat, sessions: SessionFactory
) -> None:
    summary = await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    assert kinds(await merchant.tap(summary.buttons[0][0])) == ["confirmation"]

    cancel_after = await merchant.tap(summary.buttons[2][0])  # Cancel, right after Send

    assert "this tap did nothing" in cancel_after[0].text
    assert "may have gone out" in cancel_after[0].text and "unpaid" in cancel_after[0].text
    assert "nothing was sent" not in cancel_after[0].text
    [invoice] = await invoices(sessions)
    assert invoice.status is not InvoiceStatus.CANCELLED


async def test_a_skipped_name_shows_the_saved_name_the_invoice_will_carry(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await saved_customers(sessions, "Jane", [CUSTOMER])
    summary = await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    assert "Jane (2547•••••678)" in summary.text

    # Editing the name says what the invoice would carry now: the saved one, not "no name".
    await merchant.tap(summary.buttons[1][0])
    assert "Now: Jane (saved name)." in (await merchant.only("name")).text
    summary = await merchant.only("skip")
    assert "Jane (2547•••••678)" in summary.text

    # Another number typed in an edit: that number's saved name, here none.
    await merchant.tap(summary.buttons[1][0])
    other = await merchant.only("phone 0798765432")
    assert "Jane" not in other.text and "2547•••••432" in other.text
    await merchant.tap(other.buttons[0][0])
    [invoice] = await invoices(sessions)
    assert invoice.customer_name is None and invoice.customer_phone == "254798765432"


# Same-named customers -------------------------------------------------------------------------


async def saved_customers(sessions: SessionFactory, name: str, phones: list[str]) -> None:
    async with sessions() as session, session.begin():
        owner = await merchant_service.find(session, MERCHANT)
        assert owner is not None
        for phone in phones:
            await customer_service.remember(session, merchant_id=owner.id, phone=phone, name=name)


@pytest.mark.parametrize("typed", ["Émile", "émile", "ÉMILE"])
async def test_a_saved_name_with_accents_is_found_whatever_its_case(
    merchant: Chat, sessions: SessionFactory, typed: str
) -> None:
    await saved_customers(sessions, "Émile", [CUSTOMER])
    assert kinds(await merchant.say(f"invoice {typed} 500 Cake")) == ["confirmation"]
    [invoice] = await invoices(sessions)
    assert invoice.customer_phone == CUSTOMER and invoice.customer_name == "Émile"


async def test_same_named_customers_are_offered_to_choose(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await saved_customers(sessions, "Jane", ["254712345678", "254798765432"])
    choice = await merchant.only("invoice jane 500 Cake")
    assert "2 customers called Jane" in choice.text and "KSh 500" in choice.text
    assert "2547•••••678" in choice.text and "2547•••••432" in choice.text
    assert "254798765432" not in choice.text
    assert [title for _, title in choice.buttons] == ["1", "2"]
    assert kinds(await merchant.tap(choice.buttons[1][0])) == ["confirmation"]
    again = await merchant.tap(choice.buttons[1][0])
    assert again[0].text == texts.PICK_STALE  # a list, not a summary, and no Send was tapped
    [invoice] = await invoices(sessions)
    second_line = next(line for line in choice.text.splitlines() if line.startswith("2. "))
    assert second_line.endswith(invoice.customer_phone[-3:]) and invoice.customer_name == "Jane"

    typed = await merchant.only("invoice Jane 300 Bread")
    assert "3. " not in typed.text
    no_such = await merchant.only("7")  # no such choice: said so, and asked again
    assert no_such.text.startswith("There is no 7 on the list.") and no_such.buttons
    other = await merchant.only("the first one")
    assert other.text.startswith(texts.PICK_TAP) and other.buttons
    assert await merchant.say("²")  # a digit that is no number: an answer, not a crash
    assert kinds(await merchant.say("1")) == ["confirmation"]
    assert {i.customer_phone for i in await invoices(sessions)} == {
        "254798765432",
        "254712345678",
    }


async def test_many_same_named_customers_ask_for_the_phone(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await saved_customers(sessions, "Jane", [f"25471234567{n}" for n in range(8)])
    reply = await merchant.only("invoice Jane 500 Cake")
    # Eight, of which only the first few are read: no count that could be wrong.
    assert "more than 3 customers called Jane" in reply.text and "phone number" in reply.text
    assert not reply.buttons
    assert await invoices(sessions) == []


async def test_same_named_customers_whose_numbers_end_alike_ask_for_the_phone(
    merchant: Chat, sessions: SessionFactory
) -> None:
    # 0722000081 and 0733000081 both read 2547•••••081: two choices nobody can tell apart.
    await saved_customers(sessions, "Ann", ["254722000081", "254733000081"])
    reply = await merchant.only("invoice Ann 900 Extension cable")
    assert "2 customers called Ann whose numbers end the same way" in reply.text
    assert "invoice 0712345678 900 Extension cable" in reply.text and not reply.buttons
    assert await invoices(sessions) == []


async def test_a_saved_name_ending_in_a_number_is_read_as_the_whole_name(
    merchant: Chat, sessions: SessionFactory
) -> None:
    """`invoice Duka 24 500 Sugar` to a customer saved as "Duka 24": the name ends at the
    second number, not the first (which read KSh 24 for "500 Sugar", or asked 24 or 24,500)."""
    await saved_customers(sessions, "Duka 24", [CUSTOMER])
    assert kinds(await merchant.say("invoice duka 24 500 Sugar")) == ["confirmation"]
    [invoice] = await invoices(sessions)
    assert (invoice.customer_name, invoice.amount_cents, invoice.description) == (
        "Duka 24",
        50_000,
        "Sugar",
    )


async def test_a_short_saved_name_is_still_read_before_numbers_in_the_description(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await saved_customers(sessions, "Mama", [CUSTOMER])
    assert kinds(await merchant.say("invoice Mama 1500 2 bags of rice")) == ["confirmation"]
    [invoice] = await invoices(sessions)
    assert (invoice.amount_cents, invoice.description) == (150_000, "2 bags of rice")


async def test_two_saved_names_that_could_both_be_meant_ask_for_the_phone(
    merchant: Chat, sessions: SessionFactory
) -> None:
    """ "Mama" and "Mama 2" saved: `invoice Mama 2 1500 Rice` is KSh 2 to Mama or KSh 1,500 to
    Mama 2. A one-line invoice goes out at once, so nothing goes out: the phone is asked for."""
    await saved_customers(sessions, "Mama", [CUSTOMER])
    await saved_customers(sessions, "Mama 2", ["254798765432"])
    reply = await merchant.only("invoice Mama 2 1500 Rice")
    assert 'saved as "Mama" and "Mama 2"' in reply.text and "phone number" in reply.text
    assert await invoices(sessions) == []


async def test_when_no_reading_names_a_saved_customer_the_first_one_answers(
    merchant: Chat, sessions: SessionFactory
) -> None:
    no_match = await merchant.only("invoice Mama 2 1500 Rice")
    assert "no saved customer called Mama." in no_match.text
    asked = await merchant.only("invoice Duka 24 500 Sugar")
    assert "Is that KSh 24 or KSh 24,500?" in asked.text
    assert await invoices(sessions) == []


# Mid-flow commands ----------------------------------------------------------------------------


async def at_the_name_step(merchant: Chat) -> None:
    await merchant.only("invoice")
    await merchant.only("0712345678")


@pytest.mark.parametrize(
    "typed", ["Cancel.", "cancel!", "Cancel 🙏", "cancel🙏", "cancel please", "\u200ecancel"]
)
async def test_cancel_however_it_is_put_cancels_the_flow(
    merchant: Chat, sessions: SessionFactory, typed: str
) -> None:
    await at_the_name_step(merchant)
    assert (await merchant.only(typed)).text == texts.FLOW_CANCELLED
    assert texts.FLOW_ASK_AMOUNT not in (await merchant.only("Jane")).text  # no flow left
    assert await invoices(sessions) == []


@pytest.mark.parametrize("typed", ["Skip!", "skip please"])
async def test_skip_and_back_however_they_are_put(merchant: Chat, typed: str) -> None:
    await at_the_name_step(merchant)
    assert texts.FLOW_ASK_AMOUNT in (await merchant.only(typed)).text
    assert texts.FLOW_ASK_NAME in (await merchant.only("Back.")).text


async def test_a_customer_name_is_shown_as_typed_or_asked_again(merchant: Chat) -> None:
    """The name goes on the invoice, its page and the receipts: no reordering characters,
    nothing invisible taken for a name."""
    await at_the_name_step(merchant)
    for typed in ("Jane \u202eeoD", "\u200b\u200b", "x" * 81):
        answer = await merchant.only(typed)
        assert texts.FLOW_ASK_AMOUNT not in answer.text and texts.FLOW_ASK_NAME in answer.text
        if typed == "\u200b\u200b":
            assert "Type the customer's name, or skip." in answer.text
    assert "text-direction" in (await merchant.only("Jane \u2067Doe")).text
    assert texts.FLOW_ASK_AMOUNT in (await merchant.only("Jane  Doe")).text


async def test_a_phone_number_typed_for_the_name_is_asked_again(merchant: Chat) -> None:
    """Saved as the name, it would be the only full number the merchant sees."""
    await at_the_name_step(merchant)
    for typed in ("0788 123 456", "+254 788-123-456", "(0788) 123456"):
        answer = await merchant.only(typed)
        assert answer.text.startswith("That looks like a phone number, not a name.")
        assert texts.FLOW_ASK_NAME in answer.text
    assert texts.FLOW_ASK_AMOUNT in (await merchant.only("Room 12 Shop 3")).text


async def test_a_command_mid_flow_is_answered_then_the_question_is_asked_again(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await at_the_name_step(merchant)
    answer = await merchant.only("unpaid")
    assert texts.NO_UNPAID in answer.text and texts.FLOW_ASK_NAME in answer.text
    assert texts.FLOW_ASK_AMOUNT in (await merchant.only("skip")).text
    await merchant.only("500")
    summary = await merchant.only("Cake")
    both = await merchant.say("help")  # at the summary: help, then the summary with buttons
    assert [texts.HELP in both[0].text, bool(both[1].buttons)] == [True, True]
    assert kinds(await merchant.tap(both[1].buttons[0][0])) == ["confirmation"]
    assert summary.buttons[0][0] == both[1].buttons[0][0]
    assert len(await invoices(sessions)) == 1


async def expire_the_flow(sessions: SessionFactory) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            sa.text("UPDATE conversation SET expires_at = :at"),
            {"at": utcnow() - timedelta(seconds=1)},
        )


async def test_an_expired_summary_button_says_it_expired(
    merchant: Chat, sessions: SessionFactory
) -> None:
    summary = await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    await expire_the_flow(sessions)
    [reply] = await merchant.tap(summary.buttons[0][0])
    assert "expired after 30 minutes without a reply" in reply.text
    assert await invoices(sessions) == []


@pytest.mark.parametrize(
    ("ttl", "said"),
    [(60, "1 minute without"), (119, "1 minute without"), (120, "2 minutes without")],
)
async def test_the_expiry_notice_counts_minutes_in_good_grammar(
    merchant: Chat, sessions: SessionFactory, ttl: int, said: str
) -> None:
    merchant.overrides["conversation_ttl"] = ttl
    await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    await expire_the_flow(sessions)
    assert said in (await merchant.only("send")).text
    assert await invoices(sessions) == []


@pytest.mark.parametrize("typed", ["help", "unpaid", "hello?"])
async def test_a_merchant_still_writing_keeps_the_flow_alive(
    merchant: Chat, sessions: SessionFactory, typed: str
) -> None:
    """A command mid-flow, or free text at the summary, is the merchant still at it: the
    flow's time starts again, so the Send that follows is not "expired"."""
    summary = await summary_after(merchant, "0712345678", "skip", "500", "Cake")
    async with sessions() as session, session.begin():
        await session.execute(
            sa.text("UPDATE conversation SET expires_at = :at"),
            {"at": utcnow() + timedelta(seconds=2)},
        )
    await merchant.say(typed)
    async with sessions() as session:
        expires_at = await session.scalar(sa.select(Conversation.expires_at))
    assert expires_at is not None and expires_at > utcnow() + timedelta(minutes=1)
    assert kinds(await merchant.tap(summary.buttons[0][0])) == ["confirmation"]


# status and remind ------------------------------------------------------------------------------


async def test_status_of_a_paid_invoice_shows_the_receipt_number(
    merchant: Chat, sessions: SessionFactory
) -> None:
    async with sessions() as session, session.begin():
        owner = await merchant_service.find(session, MERCHANT)
        invoice = await factories.invoice(
            session, merchant=owner, status=InvoiceStatus.PAID, paid_at=utcnow()
        )
        await factories.payment(
            session, invoice=invoice, status=PaymentStatus.SUCCESS, receipt_number="TK4Q1X2Z9A"
        )
        unpaid = await factories.invoice(session, merchant=owner, customer_name="Mama Mboga")
    paid_text = (await merchant.only(f"status {invoice.number}")).text
    assert f"Invoice {invoice.number}: paid" in paid_text
    assert "M-PESA receipt TK4Q1X2Z9A" in paid_text
    unpaid_text = (await merchant.only(f"status {unpaid.number.lower()}")).text
    assert "sent, waiting for payment" in unpaid_text and "Mama Mboga (2547•••••678)" in unpaid_text
    assert f"remind {unpaid.number}" in unpaid_text and "receipt" not in unpaid_text


async def test_status_while_a_payment_is_under_way_or_checked_says_not_to_remind(
    merchant: Chat, sessions: SessionFactory
) -> None:
    async with sessions() as session, session.begin():
        owner = await merchant_service.find(session, MERCHANT)
        paying = await factories.invoice(session, merchant=owner)
        await factories.payment(session, invoice=paying, push_sent_at=utcnow())
        checked = await factories.invoice(session, merchant=owner)
        await factories.payment(
            session,
            invoice=checked,
            status=PaymentStatus.FAILED,
            result_code="no_response",
            needs_review=True,
            review_reason=payment_messages.OUTCOME_UNKNOWN_REASON,
            created_at=utcnow() - timedelta(minutes=10),
        )
        # The customer tapped again since, and cancelled: the question is still open.
        await factories.payment(
            session, invoice=checked, status=PaymentStatus.FAILED, result_code="1032"
        )
    paying_text = (await merchant.only(f"status {paying.number}")).text
    assert "Payment: in progress: an M-PESA prompt went to 2547•••••678." in paying_text
    assert f"remind {paying.number}" not in paying_text
    assert (await merchant.only(f"remind {paying.number}")).text == (
        f"A payment of invoice {paying.number} is in progress: an M-PESA prompt is open. "
        "Remind once it has ended."
    )
    checked_text = (await merchant.only(f"status {checked.number}")).text
    assert "Payment: a payment is being checked by our team" in checked_text
    assert "don't send a reminder" in checked_text and f"remind {checked.number} to" not in (
        checked_text
    )
    refused = (await merchant.only(f"remind {checked.number}")).text
    assert refused == (
        f"A payment of invoice {checked.number} is being checked by our team against the "
        "M-PESA statement: the customer may have paid. No reminder until it is settled."
    )


async def test_remind_right_away_when_the_last_message_failed(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await merchant.say("invoice 0712345678 500 Cake")
    [invoice] = await invoices(sessions)
    refused = await merchant.only(f"remind {invoice.number}")
    assert "remind again in" in refused.text
    async with sessions() as session, session.begin():
        await session.execute(
            sa.update(MessageLog)
            .where(MessageLog.kind == "invoice")
            .values(status=DeliveryStatus.FAILED, error_code="131026")
        )
    sent = await merchant.only(f"remind {invoice.number}")
    assert "Reminder" in sent.text
    again = await merchant.only(f"remind {invoice.number}")  # the reminder went: interval again
    assert "remind again in" in again.text


async def test_two_reminders_at_once_send_one(sessions: SessionFactory) -> None:
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session)
    seen = invoice.last_reminded_at
    async with sessions() as session, session.begin():
        first = await invoice_repository.claim_reminder(session, invoice.id, seen=seen, at=utcnow())
    async with sessions() as session, session.begin():
        second = await invoice_repository.claim_reminder(
            session, invoice.id, seen=seen, at=utcnow()
        )
    assert (first, second) == (True, False)


# STOP, suspension ------------------------------------------------------------------------------


async def test_stop_from_someone_nobody_invoiced_says_so(
    sessions: SessionFactory, database_url: str
) -> None:
    stranger = Chat(sessions, database_url, "254733000000")
    assert (await stranger.only("STOP")).text == texts.NOTHING_TO_STOP


async def invoiced_customer(merchant: Chat, sessions: SessionFactory, database_url: str) -> Chat:
    """The customer's chat once the merchant's invoice reached it (read already)."""
    await merchant.say("invoice 0712345678 500 Cake")
    customer = Chat(sessions, database_url, CUSTOMER)
    await customer.replies()
    return customer


@pytest.mark.parametrize(
    ("unpaid", "heading", "shown"),
    [
        (1, texts.CUSTOMER_INVOICE, 1),
        (3, "You have 3 unpaid invoices from businesses on InvoiceIQ:", 3),
        (4, "You have more than 3 unpaid invoices from businesses on InvoiceIQ.", 3),
    ],
)
async def test_a_customer_is_told_how_many_invoices_are_unpaid_truthfully(
    merchant: Chat,
    sessions: SessionFactory,
    database_url: str,
    unpaid: int,
    heading: str,
    shown: int,
) -> None:
    for n in range(unpaid):
        await merchant.say(f"invoice 0712345678 {500 + n} Cake")
    customer = Chat(sessions, database_url, CUSTOMER)
    await customer.replies()
    replies = await customer.say("hi, what do I owe?")
    assert replies[0].text.startswith(heading)
    assert [r.kind for r in replies[1:]] == ["invoice_copy"] * shown + ["reply"]
    newest = f"KSh {500 + unpaid - 1}"
    assert newest in replies[1].text


@pytest.mark.parametrize("checked", [False, True])
async def test_a_customer_whose_payment_is_under_way_is_not_invited_to_pay_again(
    merchant: Chat, sessions: SessionFactory, database_url: str, checked: bool
) -> None:
    await merchant.say("invoice 0712345678 500 Cake")
    [invoice] = await invoices(sessions)
    async with sessions() as session, session.begin():
        values: dict[str, Any] = {"push_sent_at": utcnow()}
        if checked:  # given up on, flagged: the customer may have paid
            values |= {"status": PaymentStatus.FAILED, "result_code": "no_response"}
            values |= {
                "needs_review": True,
                "review_reason": payment_messages.OUTCOME_UNKNOWN_REASON,
            }
        await factories.payment(session, invoice=invoice, **values)
    customer = Chat(sessions, database_url, CUSTOMER)
    await customer.replies()

    replies = await customer.say("nimelipa")

    assert [r.kind for r in replies[1:]] == ["reply", "reply"]
    assert not any(r.buttons for r in replies)
    expected = "we are checking a payment" if checked else "your payment is being confirmed"
    assert f"Invoice {invoice.number} (KSh 500) from Wanjiku Designs: {expected}" in (
        replies[1].text
    )


async def test_a_reaction_or_system_notice_is_not_answered(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    """A 👍 on the invoice is not a question: no invoices again, no help; an image is."""
    customer = await invoiced_customer(merchant, sessions, database_url)
    for chat in (customer, merchant):
        assert await chat._handle(IncomingMessage(_wamid(), chat.phone, "event")) == []
    assert await customer._handle(IncomingMessage(_wamid(), CUSTOMER, "unsupported"))
    assert await merchant._handle(IncomingMessage(_wamid(), MERCHANT, "unsupported"))


async def test_punctuation_after_name_or_invoice_is_still_the_command(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    newcomer = Chat(sessions, database_url, "254700000077")
    named = await newcomer.only("Name: Duka Bora")
    assert named.text == texts.NAME_SET.format(name="Duka Bora")
    # Mid-flow, a mistyped one-line invoice is explained, not taken as the customer's name.
    await summary_after(merchant, "0712345678", "Jane", "500", "Cake")
    await merchant.only("back")
    await merchant.only("back")
    await merchant.only("back")  # at the name step
    asked = await merchant.only("Invoice: 0712345678 1 500 Cake")
    assert "KSh 1 or KSh 1,500" in asked.text and texts.FLOW_ASK_NAME in asked.text


async def test_a_one_line_invoice_typed_at_the_phone_step_is_told_where_it_goes(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await merchant.only("invoice")
    told = await merchant.only("0722000150  1500 Milk")
    assert told.text.startswith("Type just the phone number here")
    assert "invoice 0722000150 1500 Milk" in told.text and texts.FLOW_ASK_PHONE in told.text
    assert "only digits" not in told.text
    # As it says: the one line, typed mid-flow, sends it.
    # The phone and a name: just the phone, and no one-line form that would itself be refused.
    named = await merchant.only("0722000150 Jane")
    assert named.text.startswith(texts.FLOW_PHONE_ONLY) and "one line" not in named.text
    # A one-line invoice with a mistake, typed at the phone step: the mistake is explained.
    spaced = await merchant.only("invoice 0712 345 678 1500 Rice")
    assert spaced.text.startswith("Type the phone number without spaces")
    assert kinds(await merchant.say("invoice 0722000150 1500 Milk")) == ["confirmation"]
    [invoice] = await invoices(sessions)
    assert invoice.customer_phone == "254722000150" and invoice.amount_cents == 150_000


async def test_the_guided_flow_refuses_a_number_that_sent_stop_when_it_is_typed(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    customer = await invoiced_customer(merchant, sessions, database_url)
    assert (await customer.only("STOP")).text == texts.STOPPED
    await merchant.only("invoice")
    refused = await merchant.only("0712345678")
    assert refused.text.startswith(texts.FLOW_OPTED_OUT) and texts.FLOW_ASK_PHONE in refused.text
    summary = await summary_after(merchant, "0722000092", "skip", "500", "Cake")
    await merchant.tap(summary.buttons[1][0])  # Edit, to the number that sent STOP
    assert (await merchant.only("phone 0712345678")).text.startswith(texts.FLOW_OPTED_OUT)
    assert kinds(await merchant.tap(summary.buttons[0][0])) == ["reply"]  # stale after Edit
    assert len(await invoices(sessions)) == 1


@pytest.mark.parametrize(
    "text", ["Stop!", "STOP.", "stop sending these", "please stop", "Unsubscribe", "*stop*"]
)
async def test_stop_however_it_is_put_stops_the_invoices(
    merchant: Chat, sessions: SessionFactory, database_url: str, text: str
) -> None:
    customer = await invoiced_customer(merchant, sessions, database_url)
    assert (await customer.only(text)).text == texts.STOPPED
    assert "STOP" in (await merchant.only("invoice 0712345678 300 Bread")).text
    assert len(await invoices(sessions)) == 1


@pytest.mark.parametrize(
    "text",
    [
        "stopover at 5?",
        "Stop by the shop tomorrow, I'll pay cash",
        "stop, the amount is wrong",
        "Start date?",
    ],
)
async def test_a_message_that_only_mentions_stop_is_not_an_opt_out(
    merchant: Chat, sessions: SessionFactory, database_url: str, text: str
) -> None:
    customer = await invoiced_customer(merchant, sessions, database_url)
    replies = await customer.say(text)
    assert texts.STOPPED not in [r.text for r in replies]
    assert any(r.buttons for r in replies)  # the unpaid invoice again, with its Pay button


async def test_a_merchant_who_is_also_a_customer_can_stop_and_start(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    """Another merchant invoices this one: their STOP is a customer's STOP (no merchant command
    is called stop), and START undoes it."""
    async with sessions() as session, session.begin():
        await merchant_service.set_business_name(
            session, phone=CUSTOMER, name="Jane's Salon", signup=SignupMode.OPEN
        )
    customer = await invoiced_customer(merchant, sessions, database_url)

    assert (await customer.only("STOP")).text == texts.STOPPED
    assert "STOP" in (await merchant.only("invoice 0712345678 300 Bread")).text
    assert (await customer.only("start")).text == texts.STARTED
    assert kinds(await merchant.say("invoice 0712345678 300 Bread")) == ["confirmation"]
    # A command of theirs that ends in "stop" is the command, not an opt-out.
    await customer.replies()  # the invoice that came after START
    assert "Pit Stop" in (await customer.only("name Pit Stop")).text
    assert kinds(await merchant.say("invoice 0712345678 200 Milk")) == ["confirmation"]


async def test_vat_mid_flow_is_a_command_not_a_description(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await merchant.only("invoice")
    await merchant.only("0712345678")
    await merchant.only("skip")
    await merchant.only("500")

    answer = await merchant.only("vat on")

    assert "VAT is on" in answer.text and texts.FLOW_ASK_DESCRIPTION in answer.text
    summary = await merchant.only("Cake")
    assert "Cake" in summary.text and "vat on" not in summary.text


async def test_a_mistyped_one_line_invoice_mid_flow_is_explained_not_taken_as_a_name(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await at_the_name_step(merchant)

    answer = await merchant.only("invoice 0712345678 1 500 Cake")

    assert "KSh 1 or KSh 1,500" in answer.text and texts.FLOW_ASK_NAME in answer.text
    summary_next = await merchant.only("Jane")  # still at the name step
    assert texts.FLOW_ASK_AMOUNT in summary_next.text


async def test_a_suspended_merchant_can_look_but_not_remind(
    merchant: Chat, sessions: SessionFactory
) -> None:
    await merchant.say("invoice 0712345678 500 Cake")
    [invoice] = await invoices(sessions)
    async with sessions() as session, session.begin():
        await merchant_service.set_status(session, phone=MERCHANT, status=MerchantStatus.SUSPENDED)
    merchant.overrides["remind_min_interval"] = 0
    assert "suspended" in (await merchant.only(f"remind {invoice.number}")).text
    assert "suspended" in (await merchant.only("invoice 0712345678 500 Cake")).text
    assert invoice.number in (await merchant.only(f"status {invoice.number}")).text
    assert len(await invoices(sessions)) == 1
    # Nothing they are told invites them to "type invoice", which they cannot.
    await merchant.only(f"cancel {invoice.number}")
    assert (await merchant.only("unpaid")).text == texts.NO_UNPAID_SUSPENDED
    renamed = await merchant.only("name Wanjiku Studio")
    assert renamed.text == texts.NAME_SET_SUSPENDED.format(name="Wanjiku Studio")
    assert "Type invoice" not in renamed.text


async def test_a_stored_message_handled_again_is_answered_once(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    """The worker re-runs a queued message whose first run committed (its row re-claimed
    after a crash): nothing happens twice."""
    message = IncomingMessage(_wamid(), MERCHANT, "text", text="invoice 0712345678 500 Cake")
    payload = adapter.incoming_to_json(message)
    settings = make_settings(database_url=database_url)
    async with sessions() as session, session.begin():
        assert await inbox.record(session, callbacks.SOURCE_MESSAGE, message.wamid, payload)
    for _ in range(2):
        async with sessions() as session, session.begin():
            handled = await callbacks.handle_event(
                session, settings, callbacks.INBOUND_TOPIC, payload
            )
        assert handled
    assert len(await invoices(sessions)) == 1
    assert kinds(await merchant.replies()) == ["confirmation"]


async def stored_message(sessions: SessionFactory, text: str) -> dict[str, object]:
    """A merchant's message as the webhook stores it; its payload, as the worker gets it."""
    message = IncomingMessage(_wamid(), MERCHANT, "text", text=text)
    payload = adapter.incoming_to_json(message)
    async with sessions() as session, session.begin():
        assert await inbox.record(session, callbacks.SOURCE_MESSAGE, message.wamid, payload)
    return payload


async def test_two_workers_handling_one_stored_message_at_once_answer_it_once(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    """Two runs of one message at the same moment (a lease that expired under a slow worker):
    the second waits for the first's transaction, then finds the message answered."""
    payload = await stored_message(sessions, "invoice 0712345678 500 Cake")
    settings = make_settings(database_url=database_url)
    gate = asyncio.Event()

    async def run() -> bool:
        await gate.wait()
        async with sessions() as session, session.begin():
            return await callbacks.handle_event(session, settings, callbacks.INBOUND_TOPIC, payload)

    racers = [asyncio.create_task(run()) for _ in range(2)]
    gate.set()
    assert await asyncio.gather(*racers) == [True, True]
    assert len(await invoices(sessions)) == 1
    assert kinds(await merchant.replies()) == ["confirmation"]


class CrashBeforeCommit(Exception):
    pass


async def test_a_run_that_fails_before_its_commit_leaves_the_message_to_the_next_run(
    merchant: Chat, sessions: SessionFactory, database_url: str
) -> None:
    """The message is marked processed in the transaction of its effects: a run that dies
    before committing leaves neither, and the next run answers it, once."""
    payload = await stored_message(sessions, "invoice 0712345678 500 Cake")
    settings = make_settings(database_url=database_url)
    with pytest.raises(CrashBeforeCommit):
        async with sessions() as session, session.begin():
            await callbacks.handle_event(session, settings, callbacks.INBOUND_TOPIC, payload)
            raise CrashBeforeCommit()
    assert await invoices(sessions) == []
    assert await merchant.replies() == []
    async with sessions() as session:
        event = await inbox.get(session, callbacks.SOURCE_MESSAGE, str(payload["wamid"]))
    assert event is not None and event.processed_at is None

    async with sessions() as session, session.begin():
        assert await callbacks.handle_event(session, settings, callbacks.INBOUND_TOPIC, payload)
    assert len(await invoices(sessions)) == 1
    assert kinds(await merchant.replies()) == ["confirmation"]


# Renaming under approval -------------------------------------------------------------------


async def mama_mboga(sessions: SessionFactory, database_url: str, **values: object) -> Chat:
    """The chat of a merchant named Mama Mboga (approved unless `status` says), under approval."""
    async with sessions() as session, session.begin():
        await factories.merchant(session, phone=MERCHANT, business_name="Mama Mboga", **values)
    return Chat(sessions, database_url, MERCHANT, {"merchant_signup": "approval"})


async def the_merchant(sessions: SessionFactory) -> Merchant | None:
    async with sessions() as session:
        return await merchant_service.find(session, MERCHANT)


async def test_a_new_name_under_approval_waits_while_the_approved_one_stays_in_use(
    sessions: SessionFactory, database_url: str
) -> None:
    """Customers see the name on every invoice, page and receipt: an approved "Mama Mboga"
    must not send as "KPLC Prepaid" unseen, nor stop invoicing while it waits."""
    chat = await mama_mboga(sessions, database_url)

    renamed = await chat.only("name KPLC Prepaid")
    assert "KPLC Prepaid* is waiting for approval" in renamed.text
    assert "keep showing *Mama Mboga*" in renamed.text
    assert kinds(await chat.say("invoice 0712345678 500 Token")) == ["confirmation"]
    [invoice] = await invoices(sessions)
    customer = Chat(sessions, database_url, CUSTOMER)
    [sent] = await customer.replies()
    assert "Mama Mboga" in sent.text and "KPLC" not in sent.text
    assert invoice.customer_phone == CUSTOMER

    async with sessions() as session, session.begin():
        approved = await merchant_service.approve(session, phone=MERCHANT)
    assert approved.business_name == "KPLC Prepaid" and approved.pending_business_name is None
    assert approved.status is MerchantStatus.ACTIVE


async def test_asking_for_the_approved_name_again_withdraws_the_request(
    sessions: SessionFactory, database_url: str
) -> None:
    chat = await mama_mboga(sessions, database_url)
    await chat.only("name KPLC Prepaid")

    back = await chat.only("name Mama Mboga")

    assert "Mama Mboga" in back.text and "waiting" not in back.text
    owner = await the_merchant(sessions)
    assert owner is not None and owner.pending_business_name is None


async def test_a_merchant_not_yet_approved_just_changes_the_name_it_waits_with(
    sessions: SessionFactory, database_url: str
) -> None:
    chat = await mama_mboga(sessions, database_url, status=MerchantStatus.PENDING_APPROVAL)

    renamed = await chat.only("name Mama Mboga Fresh")

    assert "Mama Mboga Fresh" in renamed.text and "waiting for approval" in renamed.text
    owner = await the_merchant(sessions)
    assert owner is not None and owner.business_name == "Mama Mboga Fresh"
    assert owner.pending_business_name is None


async def test_the_same_name_again_or_a_rename_in_open_signup_keeps_the_merchant_active(
    sessions: SessionFactory, database_url: str
) -> None:
    chat = await mama_mboga(sessions, database_url)

    same = await chat.only("name Mama Mboga")
    chat.overrides = {"merchant_signup": "open"}
    other = await chat.only("name Mama Mboga Fresh")

    assert "Type invoice" in same.text and "Type invoice" in other.text
    owner = await the_merchant(sessions)
    assert owner is not None and owner.status is MerchantStatus.ACTIVE


@pytest.mark.parametrize(
    "typed", ["name\nWanjiku Designs", "Name\u00a0Wanjiku Designs", "NAME\tWanjiku Designs"]
)
async def test_a_new_user_names_their_business_however_it_is_spaced(
    sessions: SessionFactory, database_url: str, typed: str
) -> None:
    newcomer = Chat(sessions, database_url, "254733000000", {"merchant_signup": "open"})
    assert "Wanjiku Designs" in (await newcomer.only(typed)).text
    async with sessions() as session:
        merchant = await merchant_service.find(session, "254733000000")
    assert merchant is not None and merchant.business_name == "Wanjiku Designs"
