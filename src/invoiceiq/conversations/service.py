"""Inbound chat: who is writing (merchant, customer, anyone else) and what they get back."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.conversations import guided, repository, texts
from invoiceiq.conversations.commands import (
    Command,
    CommandError,
    Help,
    InvoiceAction,
    NameReading,
    OneLineInvoice,
    SavedNameInvoice,
    SetName,
    SetVat,
    StartGuided,
    Unknown,
    Unpaid,
    bare_words,
    first_word,
    keyword,
    parse_command,
)
from invoiceiq.conversations.models import Conversation
from invoiceiq.conversations.schemas import IncomingMessage
from invoiceiq.customers import service as customer_service
from invoiceiq.customers.models import Customer
from invoiceiq.errors import AppError
from invoiceiq.invoices import messages as invoice_messages
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.merchants.states import MerchantStatus
from invoiceiq.notifications import delivery
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.payments import service as payment_service

PAY_PREFIX = "pay:"
# Same-named customers offered as buttons; more than this and the merchant types the phone.
MAX_PICK = 3
# A customer who writes gets this many of their unpaid invoices, newest first (DESIGN §5).
CUSTOMER_INVOICES_SHOWN = 3
# Commands that interrupt a guided flow; anything else typed mid-flow is an answer.
MID_FLOW_COMMANDS = (
    Help,
    Unpaid,
    InvoiceAction,
    StartGuided,
    OneLineInvoice,
    SavedNameInvoice,
    SetVat,
)
# Steps where an answer never starts with "invoice": a one-line invoice typed there with a
# mistake gets the mistake explained, not taken as a customer's name or an amount.
_NO_INVOICE_ANSWERS = ("phone", "name", "amount")
# Typed on the summary, what tapping Send does (it asks "Send it?").
_TYPED_SEND = ("send", "yes")


async def handle_message(
    session: AsyncSession, settings: Settings, message: IncomingMessage
) -> None:
    """Handle one inbound message: state changes and replies (as outbox rows) in one go."""
    await notifications.log_inbound(
        session, phone=message.phone, kind=message.kind, wamid=message.wamid
    )
    await customer_service.record_inbound(session, message.phone)
    if message.kind == "event":
        return  # a reaction or a system notice: logged, nobody answered
    # Locking the merchant row serialises one merchant's messages across processes, so two
    # taps of Send (or two answers) cannot both act on the same conversation state.
    merchant = await merchant_service.find(session, message.phone, lock=True)
    button = message.button_id or ""
    if message.kind == "button" and button.startswith(PAY_PREFIX):
        replies = await payment_service.tap_to_pay(
            session, settings, phone=message.phone, number=button.removeprefix(PAY_PREFIX)
        )
    elif merchant is not None and merchant.business_name:
        replies = await _from_merchant(session, settings, merchant, message)
    else:
        replies = await _from_someone_else(session, settings, message)
    for outbound in replies:
        await notifications.send(session, to=message.phone, message=outbound)


def _reply(text: str) -> list[Outbound]:
    return [guided.reply(text)]


async def _from_merchant(
    session: AsyncSession, settings: Settings, merchant: Merchant, message: IncomingMessage
) -> list[Outbound]:
    if message.kind == "button":
        return await _flow_button(session, settings, merchant, message.button_id or "")
    if message.kind != "text" or not message.text:
        return _reply(texts.NOT_UNDERSTOOD)
    conversation, notices = await _live_conversation(session, settings, merchant)
    refused: CommandError | None = None
    try:
        command: Command | None = parse_command(message.text, max_amount=settings.mpesa_max_amount)
    except CommandError as error:
        if conversation is None:
            return [*notices, guided.reply(error.message)]
        command, refused = None, error
    if conversation is not None:
        if refused is not None and _mistyped_invoice(conversation, message.text):
            return _then(
                _reply(refused.message), await guided.still_there(session, settings, conversation)
            )
        return await _in_flow(session, settings, merchant, conversation, command, message.text)
    if isinstance(command, Unknown):
        # No command of theirs: perhaps a STOP or START as someone's customer.
        opted = await _customer_opt_out_or_in(session, message.phone, message.text)
        if opted is not None:
            return [*notices, *opted]
    if notices and not isinstance(command, (*MID_FLOW_COMMANDS, SetName)):
        return notices  # an answer to a flow that expired: the notice says to start again
    assert command is not None
    return [*notices, *await _run_safely(session, settings, merchant, command)]


async def _live_conversation(
    session: AsyncSession, settings: Settings, merchant: Merchant
) -> tuple[Conversation | None, list[Outbound]]:
    """The merchant's unexpired flow, or None with a notice when it just expired."""
    conversation = await repository.get_for_merchant(session, merchant.id)
    if conversation is None or not guided.is_expired(conversation):
        return conversation, []
    await repository.delete(session, conversation.id)
    return None, _reply(_expired_text(settings))


def _expired_text(settings: Settings) -> str:
    minutes = max(1, int(settings.conversation_ttl // 60))
    return texts.FLOW_EXPIRED.format(duration=f"{minutes} minute{'' if minutes == 1 else 's'}")


async def _in_flow(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    conversation: Conversation,
    command: Command | None,
    text: str,
) -> list[Outbound]:
    """A typed message while a flow is open: cancel, an answer, or a command in between."""
    word = text.strip().lower()
    if keyword(text) == "cancel":
        return [await guided.cancel(session, conversation)]
    if conversation.step == guided.PICK_STEP and word.isdecimal():
        return await _pick(session, settings, merchant, conversation, int(word))
    if conversation.step == "confirm" and keyword(text) in _TYPED_SEND:
        return await _send_summary(session, settings, merchant, conversation)
    if conversation.step == "confirm" and keyword(text) == "edit":
        return [await guided.edit(session, settings, conversation)]
    if not isinstance(command, MID_FLOW_COMMANDS):
        return [await guided.answer(session, settings, conversation, text)]
    # A new invoice replaces this one.
    if isinstance(command, (StartGuided, OneLineInvoice, SavedNameInvoice)):
        await repository.delete(session, conversation.id)
        return await _run_safely(session, settings, merchant, command)
    # help, unpaid, status…: answered, then the flow asks its question again
    answers = await _run_safely(session, settings, merchant, command)
    return _then(answers, await guided.still_there(session, settings, conversation))


def _mistyped_invoice(conversation: Conversation, text: str) -> bool:
    return first_word(text) == "invoice" and conversation.step in _NO_INVOICE_ANSWERS


def _then(answers: list[Outbound], question: Outbound) -> list[Outbound]:
    """The answers, then the question: in the last answer's message when both are plain text."""
    last = answers[-1] if answers else None
    if last is None or last.buttons or question.buttons or last.kind != "reply":
        return [*answers, question]
    return [*answers[:-1], guided.reply(f"{last.text}\n\n{question.text}")]


async def _run_safely(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: Command
) -> list[Outbound]:
    try:
        return await _run_command(session, settings, merchant, command)
    except AppError as error:
        return _reply(error.message)


async def _run_command(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: Command
) -> list[Outbound]:
    if isinstance(command, StartGuided):
        merchant_service.ensure_can_invoice(merchant)
        return [await guided.start(session, settings, merchant)]
    if isinstance(command, (OneLineInvoice, SavedNameInvoice)):
        return await _one_line_invoice(session, settings, merchant, command)
    if isinstance(command, InvoiceAction):
        return await _invoice_action(session, settings, merchant, command)
    if isinstance(command, Unpaid):
        return _reply(await _unpaid_text(session, merchant))
    if isinstance(command, SetName):
        named = await merchant_service.set_business_name(
            session, phone=merchant.phone, name=command.name, signup=settings.signup_mode
        )
        return _reply(_named(named, command.name))
    if isinstance(command, SetVat):
        await merchant_service.set_vat(session, merchant, enabled=command.enabled)
        text = texts.VAT_ON if command.enabled else texts.VAT_OFF
        return _reply(text.format(percent=settings.vat_percent))
    return _reply(texts.HELP)


def _named(merchant: Merchant, name: str) -> str:
    """The answer to `name …`: set, waiting for a first approval, or a new name waiting."""
    if merchant.pending_business_name:
        return texts.NAME_CHANGE_PENDING.format(
            name=merchant.pending_business_name, current=merchant.business_name
        )
    if merchant.status is MerchantStatus.PENDING_APPROVAL:
        return texts.NAME_SET_PENDING.format(name=name)
    if merchant.status is MerchantStatus.SUSPENDED:  # not "type invoice": they can't
        return texts.NAME_SET_SUSPENDED.format(name=name)
    return texts.NAME_SET.format(name=name)


async def _one_line_invoice(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    command: OneLineInvoice | SavedNameInvoice,
) -> list[Outbound]:
    merchant_service.ensure_can_invoice(merchant)
    if isinstance(command, OneLineInvoice) and command.phone is not None:
        amount, description = command.amount_cents, command.description
        return await _issue(session, settings, merchant, command.phone, None, amount, description)
    if isinstance(command, SavedNameInvoice):
        readings = command.readings
    else:
        readings = (NameReading(command.saved_name or "", invoice=command),)
    found = await customer_service.find_by_names(
        session, merchant_id=merchant.id, names=[reading.name for reading in readings]
    )
    # The reading whose name the merchant saved (`Mama 2 1500 Rice` with "Mama 2" saved is
    # KSh 1,500 for Rice). Each would be sent at once: with two saved names that could both be
    # meant, ask for the phone rather than guess.
    named = [reading for reading in readings if found[reading.name]]
    if len(named) > 1:
        names = " and ".join(f'"{reading.name}"' for reading in named)
        return _reply(texts.NAME_ENDS_UNCLEAR.format(names=names))
    reading = named[0] if named else readings[0]
    if reading.invoice is None:
        return _reply(reading.error or texts.HELP)
    return await _to_saved_customer(session, settings, merchant, reading, found[reading.name])


async def _to_saved_customer(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    reading: NameReading,
    matches: list[Customer],
) -> list[Outbound]:
    """Issue to the one customer saved under the name read; or say there is none, or too many
    to offer, or offer the few to choose from."""
    assert reading.invoice is not None
    amount, description = reading.invoice.amount_cents, reading.invoice.description
    fill = {"name": reading.name, "amount": amount // 100, "description": description}
    if not matches:
        return _reply(texts.NO_MATCH.format(**fill))
    if len(matches) == 1:
        found = matches[0]
        return await _issue(
            session, settings, merchant, found.phone, found.name, amount, description
        )
    if len(matches) > MAX_PICK:
        # Only the first few are read: how many more there are is not counted.
        return _reply(texts.SEVERAL_MATCHES.format(count=MAX_PICK, **fill))
    if len({mask_msisdn(c.phone) for c in matches}) < len(matches):
        # The choices would read the same (the mask shows a number's last digits only).
        return _reply(texts.MATCHES_ALIKE.format(count=len(matches), **fill))
    choices = [{"phone": c.phone, "name": c.name or reading.name} for c in matches]
    prompt = await guided.start_pick(
        session, settings, merchant, choices=choices, amount_cents=amount, description=description
    )
    return [prompt]


async def _issue(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    phone: str,
    name: str | None,
    amount_cents: int,
    description: str,
) -> list[Outbound]:
    """Issue an invoice. Nothing to reply: its two messages (the customer's, the merchant's
    confirmation) are queued with it; a refusal (the customer sent STOP…) is the reply."""
    try:
        await invoice_service.issue_invoice(
            session,
            settings=settings,
            merchant=merchant,
            customer_phone=phone,
            customer_name=name,
            amount_cents=amount_cents,
            description=description,
        )
    except AppError as error:
        return _reply(error.message)
    return []


async def _pick(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    conversation: Conversation,
    number: int,
) -> list[Outbound]:
    """The merchant chose one of several same-named customers: issue to that one."""
    data = conversation.data
    choices = data["choices"]
    if not 1 <= number <= len(choices):
        return [guided.pick_prompt(conversation, texts.PICK_NO_SUCH.format(number=number))]
    choice = choices[number - 1]
    await repository.delete(session, conversation.id)  # a second tap finds nothing: stale
    return await _issue(
        session,
        settings,
        merchant,
        choice["phone"],
        choice["name"],
        data["amount_cents"],
        data["description"],
    )


async def _invoice_action(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: InvoiceAction
) -> list[Outbound]:
    if command.action == "status":
        invoice = await invoice_service.get_for_merchant(session, merchant, command.number)
        return _reply(await _status_text(session, settings, invoice))
    if command.action == "cancel":
        await invoice_service.cancel(session, merchant, command.number)
        return _reply(f"Invoice {command.number} is cancelled. The customer can no longer pay it.")
    invoice = await invoice_service.remind(
        session, settings=settings, merchant=merchant, number=command.number
    )
    return _reply(f"Reminder for {invoice.number} ({format_kes(invoice.amount_cents)}) sent.")


async def _status_text(session: AsyncSession, settings: Settings, invoice: Invoice) -> str:
    receipt = None
    if invoice.status is InvoiceStatus.PAID:
        payment = await payment_service.first_success(session, invoice.id)
        receipt = payment.receipt_number if payment else None
    entry = await notifications.invoice_delivery(session, invoice.id)
    return invoice_messages.status_detail(
        invoice,
        base_url=settings.base_url,
        vat_percent=settings.vat_percent,
        delivery=delivery.progress(entry),
        receipt=receipt,
        payment_note=await _payment_note(session, invoice),
    )


async def _payment_in_hand(
    session: AsyncSession, invoice: Invoice, business: str
) -> Outbound | None:
    """Instead of an unpaid invoice's Pay button, when a payment of it is under way or being
    checked (a customer writing "I've paid" meanwhile must not be invited to pay again). A
    prompt on another number's phone (paying from the page) leaves the button: its tap says
    so."""
    hand = await payment_service.payment_in_hand(session, invoice.id)
    if hand is None:
        return None
    if hand.state == "open" and hand.payment.phone != invoice.customer_phone:
        return None
    text = (
        texts.CUSTOMER_PAYMENT_UNDER_WAY if hand.state == "open" else texts.CUSTOMER_PAYMENT_CHECKED
    )
    amount = format_kes(invoice.amount_cents)
    return guided.reply(
        text.format(number=invoice.number, amount=amount, business=business or "the business")
    )


async def _payment_note(session: AsyncSession, invoice: Invoice) -> str | None:
    """A payment of an unpaid invoice under way or being checked: what the merchant should
    know before reminding (the customer might pay twice) or cancelling (refused meanwhile)."""
    if invoice.status not in (InvoiceStatus.PENDING, InvoiceStatus.SENT):
        return None
    hand = await payment_service.payment_in_hand(session, invoice.id)
    if hand is None:
        return None
    if hand.state == "open":
        return (
            f"in progress: an M-PESA prompt went to {mask_msisdn(hand.payment.phone)}. Wait for "
            "it to end before you remind or cancel."
        )
    return (
        "a payment is being checked by our team against the M-PESA statement. Please "
        "don't send a reminder until it is settled: the customer may have paid."
    )


async def _unpaid_text(session: AsyncSession, merchant: Merchant) -> str:
    invoices = await invoice_service.unpaid(session, merchant, limit=10)
    if not invoices:
        suspended = merchant.status is MerchantStatus.SUSPENDED
        return texts.NO_UNPAID_SUSPENDED if suspended else texts.NO_UNPAID
    total = await invoice_service.count_unpaid(session, merchant)
    lines = [invoice_messages.status_line(invoice) for invoice in invoices]
    more = f"\n…and {total - len(invoices)} more." if total > len(invoices) else ""
    return f"Unpaid invoices ({total}):\n" + "\n".join(lines) + more


async def _flow_button(
    session: AsyncSession, settings: Settings, merchant: Merchant, button_id: str
) -> list[Outbound]:
    tapped = guided.parse_button(button_id)
    if tapped is None:
        return _reply(texts.HELP)
    conversation = await repository.get_for_merchant(session, merchant.id)
    if conversation is None or str(conversation.id) != tapped.conversation_id:
        return _reply(texts.PICK_STALE if tapped.action == guided.PICK else texts.FLOW_STALE)
    if guided.is_expired(conversation):
        await repository.delete(session, conversation.id)
        return _reply(_expired_text(settings))
    if tapped.action == guided.CANCEL:
        return [await guided.cancel(session, conversation)]
    if tapped.action == guided.PICK and conversation.step == guided.PICK_STEP:
        return await _pick(session, settings, merchant, conversation, tapped.choice or 0)
    if conversation.step != "confirm":
        return _reply(texts.FLOW_STALE)
    if tapped.action == guided.EDIT:
        return [await guided.edit(session, settings, conversation)]
    if tapped.action != guided.SEND:
        return _reply(texts.HELP)
    return await _send_summary(session, settings, merchant, conversation)


async def _send_summary(
    session: AsyncSession, settings: Settings, merchant: Merchant, conversation: Conversation
) -> list[Outbound]:
    """Send on the summary (tapped, or typed while it is the merchant's live one)."""
    data = conversation.data
    await repository.delete(session, conversation.id)  # a second tap finds nothing: stale
    return await _issue(
        session,
        settings,
        merchant,
        data["phone"],
        data.get("name"),
        data["amount_cents"],
        data["description"],
    )


# "STOP", "Stop!", "stop sending these", "please stop", "Unsubscribe.": a customer asking for
# no more messages gets none, however they put it. A longer message that merely starts with
# the word ("Stop by the shop tomorrow, I'll pay cash") is not that request.
OPT_OUT_WORDS = frozenset({"stop", "unsubscribe"})
OPT_OUT_MAX_WORDS = 3


async def _customer_opt_out_or_in(
    session: AsyncSession, phone: str, text: str
) -> list[Outbound] | None:
    """STOP or START from a merchant who is also someone's customer (no merchant command is
    either): their invoices from others stop or start again. None for anything else."""
    words = bare_words(text.strip().lower())
    if _asks_to_stop(words):
        stopped = await customer_service.opt_out(session, phone)
        return _reply(texts.STOPPED if stopped else texts.NOTHING_TO_STOP)
    if words == ["start"]:
        await customer_service.opt_in(session, phone)
        return _reply(texts.STARTED)
    return None


def _asks_to_stop(words: list[str]) -> bool:
    short = 0 < len(words) <= OPT_OUT_MAX_WORDS
    return short and (words[0] in OPT_OUT_WORDS or words[-1] in OPT_OUT_WORDS)


async def _from_someone_else(
    session: AsyncSession, settings: Settings, message: IncomingMessage
) -> list[Outbound]:
    text = (message.text or "").strip() if message.kind == "text" else ""
    if first_word(text) == "name":
        try:
            command = parse_command(text, max_amount=settings.mpesa_max_amount)
        except CommandError as error:
            return _reply(error.message)
        assert isinstance(command, SetName)
        merchant = await merchant_service.set_business_name(
            session, phone=message.phone, name=command.name, signup=settings.signup_mode
        )
        return _reply(_named(merchant, command.name))
    opted = await _customer_opt_out_or_in(session, message.phone, text)
    if opted is not None:
        return opted
    # One more than is shown, to know whether there are more.
    found = await invoice_service.unpaid_for_customer(
        session, message.phone, limit=CUSTOMER_INVOICES_SHOWN + 1
    )
    if not found:
        return _reply(texts.WELCOME)
    invoices = found[:CUSTOMER_INVOICES_SHOWN]
    if len(found) > len(invoices):
        heading = texts.CUSTOMER_INVOICES_MORE.format(count=len(invoices))
    elif len(invoices) == 1:
        heading = texts.CUSTOMER_INVOICE
    else:
        heading = texts.CUSTOMER_INVOICES.format(count=len(invoices))
    replies = [guided.reply(heading)]
    for invoice in invoices:
        owner = await merchant_service.get(session, invoice.merchant_id)
        business = owner.business_name if owner and owner.business_name else ""
        paying = await _payment_in_hand(session, invoice, business)
        if paying is not None:
            replies.append(paying)
            continue
        replies.append(
            invoice_messages.invoice_for_customer(
                invoice,
                business_name=business,
                base_url=settings.base_url,
                vat_percent=settings.vat_percent,
                kind="invoice_copy",
            )
        )
    replies.append(guided.reply(texts.BECOME_MERCHANT))
    return replies
