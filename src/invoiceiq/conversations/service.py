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
    OneLineInvoice,
    SetName,
    SetVat,
    StartGuided,
    Unpaid,
    parse_command,
)
from invoiceiq.conversations.schemas import IncomingMessage
from invoiceiq.customers import service as customer_service
from invoiceiq.errors import AppError
from invoiceiq.invoices import messages as invoice_messages
from invoiceiq.invoices import service as invoice_service
from invoiceiq.kit.money import format_kes
from invoiceiq.merchants import repository as merchant_repository
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.merchants.states import MerchantStatus
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.payments import service as payment_service

PAY_PREFIX = "pay:"
# Commands that interrupt a guided flow; anything else typed mid-flow is an answer.
MID_FLOW_COMMANDS = (Help, Unpaid, InvoiceAction, StartGuided, OneLineInvoice)


async def handle_message(
    session: AsyncSession, settings: Settings, message: IncomingMessage
) -> None:
    """Handle one inbound message: state changes and replies (as outbox rows) in one go."""
    await notifications.log_inbound(
        session, phone=message.phone, kind=message.kind, wamid=message.wamid
    )
    await customer_service.record_inbound(session, message.phone)
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
    notices: list[Outbound] = []
    conversation = await repository.get_for_merchant(session, merchant.id)
    if conversation is not None and guided.is_expired(conversation):
        await repository.delete(session, conversation.id)
        conversation = None
        minutes = max(1, int(settings.conversation_ttl // 60))
        notices = _reply(texts.FLOW_EXPIRED.format(minutes=minutes))
    try:
        command: Command | None = parse_command(message.text, max_amount=settings.mpesa_max_amount)
    except CommandError as error:
        if conversation is None:
            return [*notices, guided.reply(error.message)]
        command = None
    if conversation is not None:
        if message.text.strip().lower() == "cancel":
            return [await guided.cancel(session, conversation)]
        if not isinstance(command, MID_FLOW_COMMANDS):
            return [await guided.answer(session, settings, conversation, message.text)]
        if isinstance(command, (StartGuided, OneLineInvoice)):
            await repository.delete(session, conversation.id)
    elif notices and not isinstance(command, (*MID_FLOW_COMMANDS, SetName, SetVat)):
        return notices
    assert command is not None
    try:
        return [*notices, *await _run_command(session, settings, merchant, command)]
    except AppError as error:
        return [*notices, guided.reply(error.message)]


async def _run_command(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: Command
) -> list[Outbound]:
    if isinstance(command, StartGuided):
        merchant_service.ensure_can_invoice(merchant)
        return [await guided.start(session, settings, merchant)]
    if isinstance(command, OneLineInvoice):
        return await _one_line_invoice(session, settings, merchant, command)
    if isinstance(command, InvoiceAction):
        return await _invoice_action(session, settings, merchant, command)
    if isinstance(command, Unpaid):
        return _reply(await _unpaid_text(session, merchant))
    if isinstance(command, SetName):
        await merchant_repository.update(session, merchant.id, business_name=command.name)
        return _reply(texts.NAME_SET.format(name=command.name))
    if isinstance(command, SetVat):
        await merchant_service.set_vat(session, merchant, enabled=command.enabled)
        text = texts.VAT_ON if command.enabled else texts.VAT_OFF
        return _reply(text.format(percent=settings.vat_percent))
    return _reply(texts.HELP)


async def _one_line_invoice(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: OneLineInvoice
) -> list[Outbound]:
    merchant_service.ensure_can_invoice(merchant)
    phone, name = command.phone, None
    if phone is None:
        assert command.saved_name is not None
        matches = await customer_service.find_by_name(
            session, merchant_id=merchant.id, name=command.saved_name
        )
        fill = {
            "name": command.saved_name,
            "amount": command.amount_cents // 100,
            "description": command.description,
        }
        if not matches:
            return _reply(texts.NO_MATCH.format(**fill))
        if len(matches) > 1:
            return _reply(texts.SEVERAL_MATCHES.format(count=len(matches), **fill))
        phone, name = matches[0].phone, matches[0].name
    await invoice_service.issue_invoice(
        session,
        settings=settings,
        merchant=merchant,
        customer_phone=phone,
        customer_name=name,
        amount_cents=command.amount_cents,
        description=command.description,
    )
    return []  # the confirmation is queued by issue_invoice


async def _invoice_action(
    session: AsyncSession, settings: Settings, merchant: Merchant, command: InvoiceAction
) -> list[Outbound]:
    if command.action == "status":
        invoice = await invoice_service.get_for_merchant(session, merchant, command.number)
        return _reply(invoice_messages.status_line(invoice))
    if command.action == "cancel":
        await invoice_service.cancel(session, merchant, command.number)
        return _reply(f"Invoice {command.number} is cancelled. The customer can no longer pay it.")
    invoice = await invoice_service.remind(
        session, settings=settings, merchant=merchant, number=command.number
    )
    return _reply(f"Reminder for {invoice.number} ({format_kes(invoice.amount_cents)}) sent.")


async def _unpaid_text(session: AsyncSession, merchant: Merchant) -> str:
    invoices = await invoice_service.unpaid(session, merchant, limit=10)
    if not invoices:
        return texts.NO_UNPAID
    total = await invoice_service.count_unpaid(session, merchant)
    lines = [invoice_messages.status_line(invoice) for invoice in invoices]
    more = f"\n…and {total - len(invoices)} more." if total > len(invoices) else ""
    return f"Unpaid invoices ({total}):\n" + "\n".join(lines) + more


async def _flow_button(
    session: AsyncSession, settings: Settings, merchant: Merchant, button_id: str
) -> list[Outbound]:
    action, _, raw_id = button_id.rpartition(":")
    conversation = await repository.get_for_merchant(session, merchant.id)
    if (
        conversation is None
        or str(conversation.id) != raw_id
        or conversation.step != "confirm"
        or guided.is_expired(conversation)
    ):
        return _reply(texts.FLOW_STALE)
    if action == guided.CANCEL:
        return [await guided.cancel(session, conversation)]
    if action == guided.EDIT:
        return [await guided.start(session, settings, merchant)]
    if action != guided.SEND:
        return _reply(texts.HELP)
    data = conversation.data
    await repository.delete(session, conversation.id)
    try:
        await invoice_service.issue_invoice(
            session,
            settings=settings,
            merchant=merchant,
            customer_phone=data["phone"],
            customer_name=data.get("name"),
            amount_cents=data["amount_cents"],
            description=data["description"],
        )
    except AppError as error:
        return _reply(error.message)
    return []


async def _from_someone_else(
    session: AsyncSession, settings: Settings, message: IncomingMessage
) -> list[Outbound]:
    text = (message.text or "").strip() if message.kind == "text" else ""
    word = text.lower()
    if word.startswith("name ") or word == "name":
        try:
            command = parse_command(text, max_amount=settings.mpesa_max_amount)
        except CommandError as error:
            return _reply(error.message)
        assert isinstance(command, SetName)
        merchant = await merchant_service.set_business_name(
            session, phone=message.phone, name=command.name, signup=settings.signup_mode
        )
        if merchant.status is MerchantStatus.PENDING_APPROVAL:
            return _reply(texts.NAME_SET_PENDING.format(name=command.name))
        return _reply(texts.NAME_SET.format(name=command.name))
    if word == "stop":
        await customer_service.opt_out(session, message.phone)
        return _reply(texts.STOPPED)
    if word == "start":
        await customer_service.opt_in(session, message.phone)
        return _reply(texts.STARTED)
    invoices = await invoice_service.unpaid_for_customer(session, message.phone, limit=3)
    if not invoices:
        return _reply(texts.WELCOME)
    replies = [guided.reply(texts.CUSTOMER_INVOICES.format(count=len(invoices)))]
    for invoice in invoices:
        owner = await merchant_repository.get(session, invoice.merchant_id)
        replies.append(
            invoice_messages.invoice_for_customer(
                invoice,
                business_name=owner.business_name if owner and owner.business_name else "",
                base_url=settings.base_url,
                vat_percent=settings.vat_percent,
                kind="invoice_copy",
            )
        )
    replies.append(guided.reply(texts.BECOME_MERCHANT))
    return replies
