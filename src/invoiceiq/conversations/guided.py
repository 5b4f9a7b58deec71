"""The guided invoice flow: phone → name (or skip) → amount → description → summary.

State lives in the `conversation` table, so the flow survives restarts and works when
consecutive messages reach different processes. Every step validates and re-asks.

**Edit** on the summary asks which answer to change (`amount`, or `amount 1500` in one go),
takes the new one and shows the summary again; the other answers are kept. Each summary after
an edit, or after `back` from a summary, belongs to a new conversation id, so the buttons of an
older summary (showing the old answers) are stale and issue nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.conversations import repository, texts
from invoiceiq.conversations.commands import (
    CommandError,
    keyword,
    parse_amount_answer,
    parse_command,
    parse_customer_name,
    parse_description,
    parse_phone,
)
from invoiceiq.conversations.models import Conversation
from invoiceiq.customers import service as customer_service
from invoiceiq.invoices import service as invoice_service
from invoiceiq.invoices.messages import vat_included_line
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import is_msisdn, mask_msisdn
from invoiceiq.merchants import service as merchant_service
from invoiceiq.merchants.models import Merchant
from invoiceiq.notifications.schemas import Outbound

STEPS = ("phone", "name", "amount", "description", "confirm")
# Not in the sequence: choosing what to edit, and choosing among same-named customers.
EDIT_STEP, PICK_STEP = "edit", "pick"
PROMPTS = {
    "phone": texts.FLOW_ASK_PHONE,
    "name": texts.FLOW_ASK_NAME,
    "amount": texts.FLOW_ASK_AMOUNT,
    "description": texts.FLOW_ASK_DESCRIPTION,
}
# What the merchant may type to name an answer to edit.
FIELDS = {
    "phone": "phone",
    "number": "phone",
    "name": "name",
    "amount": "amount",
    "price": "amount",
    "description": "description",
    "for": "description",
}
SEND, EDIT, CANCEL, PICK = "flow:send", "flow:edit", "flow:cancel", "flow:pick"


def _expiry(settings: Settings) -> Any:
    return utcnow() + timedelta(seconds=settings.conversation_ttl)


async def still_there(
    session: AsyncSession, settings: Settings, conversation: Conversation
) -> Outbound:
    """The merchant wrote something other than an answer (help, unpaid, free text at the
    summary): they are still at it, so the flow's time starts again; its question, again."""
    await repository.extend(session, conversation.id, expires_at=_expiry(settings))
    return await resume(session, settings, conversation)


def reply(text: str) -> Outbound:
    return Outbound(kind="reply", text=text)


async def start(session: AsyncSession, settings: Settings, merchant: Merchant) -> Outbound:
    await repository.replace(
        session, merchant_id=merchant.id, step="phone", data={}, expires_at=_expiry(settings)
    )
    return reply(texts.FLOW_ASK_PHONE)


async def answer(
    session: AsyncSession, settings: Settings, conversation: Conversation, text: str
) -> Outbound:
    """Apply one typed answer to the current step; the next prompt, or the same one again."""
    if keyword(text) == "back":
        return await _back(session, settings, conversation)
    step = conversation.step
    if step == EDIT_STEP:
        return await _choose_edit(session, settings, conversation, text)
    if step not in PROMPTS:  # confirm (or pick): only the buttons move on from here
        question = await still_there(session, settings, conversation)
        hint = texts.FLOW_TAP_SUMMARY if step == "confirm" else texts.PICK_TAP
        return replace(question, text=f"{hint}\n\n{question.text}")
    data = dict(conversation.data)
    try:
        _apply(step, text, data, settings)
        await _refuse_opted_out(session, step, data)
    except CommandError as error:
        return reply(f"{error.message}\n\n{PROMPTS[step]}")
    await _note_saved_name(session, conversation, step, data)
    editing = bool(data.pop("editing", False))
    next_step = "confirm" if editing else STEPS[STEPS.index(step) + 1]
    await repository.save(
        session, conversation.id, step=next_step, data=data, expires_at=_expiry(settings)
    )
    if next_step == "confirm":
        return await summary(session, settings, conversation, data)
    return reply(PROMPTS[next_step])


def _apply(step: str, text: str, data: dict[str, Any], settings: Settings) -> None:
    """Validate one answer into `data`; CommandError says what to type instead."""
    if step == "phone":
        data["phone"] = _phone_answer(text, max_amount=settings.mpesa_max_amount)
    elif step == "name":
        data["name"] = None if keyword(text) == "skip" else parse_customer_name(text)
    elif step == "amount":
        data["amount_cents"] = parse_amount_answer(text, max_amount=settings.mpesa_max_amount)
    else:
        data["description"] = parse_description(text)


def _phone_answer(text: str, *, max_amount: int) -> str:
    """The phone step's answer; more than a phone there is told to give just the phone (and a
    whole one-line invoice, how to send it in one line)."""
    try:
        return parse_phone(text.strip())
    except CommandError:
        first, _, rest = text.strip().partition(" ")
        if not rest.strip() or not is_msisdn(first):
            raise
        one_line = " ".join(["invoice", *text.split()])
        try:
            parse_command(one_line, max_amount=max_amount)
        except CommandError:
            raise CommandError(texts.FLOW_PHONE_ONLY) from None
        hint = texts.FLOW_ONE_LINE.format(text=one_line)
        raise CommandError(f"{texts.FLOW_PHONE_ONLY} {hint}") from None


async def _refuse_opted_out(session: AsyncSession, field: str, data: dict[str, Any]) -> None:
    """A number that sent STOP is refused when typed, not only when Send is tapped."""
    if field == "phone" and await customer_service.is_opted_out(session, data["phone"]):
        raise CommandError(texts.FLOW_OPTED_OUT)


async def _note_saved_name(
    session: AsyncSession, conversation: Conversation, field: str, data: dict[str, Any]
) -> None:
    """After a phone answer: the name the merchant saved for it, which the invoice carries when
    no name is typed, so the summary shows it too."""
    if field == "phone":
        data["saved_name"] = await customer_service.saved_name(
            session, merchant_id=conversation.merchant_id, phone=data["phone"]
        )


async def edit(session: AsyncSession, settings: Settings, conversation: Conversation) -> Outbound:
    """Edit on the summary: a new conversation (old buttons go stale) asking what to change."""
    data = {k: v for k, v in conversation.data.items() if k != "editing"}
    await repository.replace(
        session,
        merchant_id=conversation.merchant_id,
        step=EDIT_STEP,
        data=data,
        expires_at=_expiry(settings),
    )
    return reply(texts.FLOW_ASK_EDIT)


async def _choose_edit(
    session: AsyncSession, settings: Settings, conversation: Conversation, text: str
) -> Outbound:
    first, _, value = text.strip().partition(" ")
    field = FIELDS.get(first.lower())
    if field is None:
        return reply(f"{texts.FLOW_EDIT_UNKNOWN}\n\n{texts.FLOW_ASK_EDIT}")
    data = dict(conversation.data)
    if value.strip():  # "amount 1500": the new answer came with the field
        try:
            _apply(field, value, data, settings)
            await _refuse_opted_out(session, field, data)
        except CommandError as error:
            return reply(f"{error.message}\n\n{texts.FLOW_ASK_EDIT}")
        await _note_saved_name(session, conversation, field, data)
        await repository.save(
            session, conversation.id, step="confirm", data=data, expires_at=_expiry(settings)
        )
        return await summary(session, settings, conversation, data)
    data["editing"] = True
    await repository.save(
        session, conversation.id, step=field, data=data, expires_at=_expiry(settings)
    )
    return reply(f"{_current(field, data)}\n{PROMPTS[field]}")


def _current(field: str, data: dict[str, Any]) -> str:
    if field == "phone":
        return f"Now: {mask_msisdn(data['phone'])}."
    if field == "name":
        if data.get("name"):
            return f"Now: {data['name']}."
        # No name typed: the invoice takes the name saved for the number, if any (skip keeps it).
        saved = data.get("saved_name")
        return f"Now: {saved} (saved name)." if saved else "Now: no name."
    if field == "amount":
        return f"Now: {format_kes(data['amount_cents'])}."
    return f"Now: {data['description']}."


async def _back(session: AsyncSession, settings: Settings, conversation: Conversation) -> Outbound:
    step, data = conversation.step, dict(conversation.data)
    if step == PICK_STEP:  # nothing before the choice: ask it again
        return pick_prompt(conversation)
    if step == EDIT_STEP:  # changed their mind: the summary as it was
        previous = "confirm"
    elif data.pop("editing", False):  # back from editing one answer: choose again
        previous = EDIT_STEP
    elif step == STEPS[0]:
        return reply(f"{texts.FLOW_NOTHING_TO_UNDO}\n\n{PROMPTS['phone']}")
    else:
        previous = STEPS[STEPS.index(step) - 1]
    if step == "confirm":
        # Leaving a summary: a new conversation id, so its buttons go stale (the next summary
        # may show other answers, and the old one's Send must not issue them).
        conversation = await repository.replace(
            session,
            merchant_id=conversation.merchant_id,
            step=previous,
            data=data,
            expires_at=_expiry(settings),
        )
    else:
        await repository.save(
            session, conversation.id, step=previous, data=data, expires_at=_expiry(settings)
        )
    if previous == "confirm":
        return await summary(session, settings, conversation, data)
    if previous == EDIT_STEP:
        return reply(texts.FLOW_ASK_EDIT)
    return reply(PROMPTS[previous])


async def resume(session: AsyncSession, settings: Settings, conversation: Conversation) -> Outbound:
    """Where the merchant is in the flow, asked again (after a command typed mid-flow)."""
    step = conversation.step
    if step == "confirm":
        return await summary(session, settings, conversation, conversation.data)
    if step == PICK_STEP:
        return pick_prompt(conversation)
    if step == EDIT_STEP:
        return reply(texts.FLOW_ASK_EDIT)
    return reply(f"{texts.FLOW_RESUME}\n{PROMPTS[step]}")


async def start_pick(
    session: AsyncSession,
    settings: Settings,
    merchant: Merchant,
    *,
    choices: list[dict[str, Any]],
    amount_cents: int,
    description: str,
) -> Outbound:
    """Several saved customers share the name typed: ask which one, with a button each."""
    data = {"choices": choices, "amount_cents": amount_cents, "description": description}
    conversation = await repository.replace(
        session, merchant_id=merchant.id, step=PICK_STEP, data=data, expires_at=_expiry(settings)
    )
    return pick_prompt(conversation)


def pick_prompt(conversation: Conversation, hint: str = "") -> Outbound:
    """The choice among same-named customers, after `hint` (what was wrong with an answer)."""
    data = conversation.data
    lines = [
        f"{n}. {c['name']} · {mask_msisdn(c['phone'])}"
        for n, c in enumerate(data["choices"], start=1)
    ]
    text = texts.PICK_CUSTOMER.format(
        count=len(lines),
        name=data["choices"][0]["name"],
        amount=format_kes(data["amount_cents"]),
        description=data["description"],
        choices="\n".join(lines),
    )
    buttons = tuple((f"{PICK}:{conversation.id}:{n}", str(n)) for n in range(1, len(lines) + 1))
    return Outbound(kind="reply", text=f"{hint}\n\n{text}" if hint else text, buttons=buttons)


@dataclass(frozen=True)
class Tapped:
    """A flow button: `flow:<verb>:<conversation id>`, and `:<n>` for a customer choice."""

    action: str
    conversation_id: str
    choice: int | None = None


def parse_button(button_id: str) -> Tapped | None:
    parts = button_id.split(":")
    if len(parts) not in (3, 4) or parts[0] != "flow":
        return None
    action = f"flow:{parts[1]}"
    if len(parts) == 3:
        return Tapped(action, parts[2])
    return Tapped(action, parts[2], int(parts[3])) if parts[3].isdecimal() else None


async def summary(
    session: AsyncSession, settings: Settings, conversation: Conversation, data: dict[str, Any]
) -> Outbound:
    """The answers to check before Send, with the VAT the invoice will show: read from the
    merchant now, as the invoice will be (a `vat off` typed mid-flow shows at once)."""
    conversation_id = conversation.id
    customer = mask_msisdn(data["phone"])
    name = data.get("name") or data.get("saved_name")
    if name:
        customer = f"{name} ({customer})"
    amount_cents = data["amount_cents"]
    merchant = await merchant_service.get(session, conversation.merchant_id)
    vat = invoice_service.vat_to_charge(merchant, settings, amount_cents) if merchant else 0
    vat_line = vat_included_line(vat, settings.vat_percent) if vat else ""
    text = texts.FLOW_SUMMARY.format(
        customer=customer,
        amount=format_kes(amount_cents),
        vat=vat_line,
        description=data["description"],
    )
    return Outbound(
        kind="reply",
        text=text,
        buttons=(
            (f"{SEND}:{conversation_id}", "Send"),
            (f"{EDIT}:{conversation_id}", "Edit"),
            (f"{CANCEL}:{conversation_id}", "Cancel"),
        ),
    )


async def cancel(session: AsyncSession, conversation: Conversation) -> Outbound:
    await repository.delete(session, conversation.id)
    return reply(texts.FLOW_CANCELLED)


def is_expired(conversation: Conversation) -> bool:
    return conversation.expires_at <= utcnow()
