"""The guided invoice flow: phone → name (or skip) → amount → description → summary.

State lives in the `conversation` table, so the flow survives restarts and works when
consecutive messages reach different processes. Every step validates and re-asks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.conversations import repository, texts
from invoiceiq.conversations.commands import (
    CommandError,
    parse_amount_answer,
    parse_description,
    parse_phone,
)
from invoiceiq.conversations.models import Conversation
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.merchants.models import Merchant
from invoiceiq.notifications.schemas import Outbound

STEPS = ("phone", "name", "amount", "description", "confirm")
PROMPTS = {
    "phone": texts.FLOW_ASK_PHONE,
    "name": texts.FLOW_ASK_NAME,
    "amount": texts.FLOW_ASK_AMOUNT,
    "description": texts.FLOW_ASK_DESCRIPTION,
}
SEND, EDIT, CANCEL = "flow:send", "flow:edit", "flow:cancel"


def _expiry(settings: Settings) -> Any:
    return utcnow() + timedelta(seconds=settings.conversation_ttl)


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
    word = text.strip().lower()
    if word == "back":
        return await _back(session, settings, conversation)
    data = dict(conversation.data)
    step = conversation.step
    try:
        if step == "phone":
            data["phone"] = parse_phone(text.strip())
        elif step == "name":
            data["name"] = None if word == "skip" else _name(text)
        elif step == "amount":
            data["amount_cents"] = parse_amount_answer(text, max_amount=settings.mpesa_max_amount)
        elif step == "description":
            data["description"] = parse_description(text)
        else:  # confirm: only the buttons move on from here
            return summary(conversation.id, data)
    except CommandError as error:
        return reply(f"{error.message}\n\n{PROMPTS[step]}")
    next_step = STEPS[STEPS.index(step) + 1]
    await repository.save(
        session, conversation.id, step=next_step, data=data, expires_at=_expiry(settings)
    )
    if next_step == "confirm":
        return summary(conversation.id, data)
    return reply(PROMPTS[next_step])


def _name(text: str) -> str:
    name = " ".join(text.split())
    if not 1 <= len(name) <= 80:
        raise CommandError("Keep the name to 80 characters or fewer, or type skip.")
    return name


async def _back(session: AsyncSession, settings: Settings, conversation: Conversation) -> Outbound:
    index = STEPS.index(conversation.step)
    if index == 0:
        return reply(f"{texts.FLOW_NOTHING_TO_UNDO}\n\n{PROMPTS['phone']}")
    previous = STEPS[index - 1]
    await repository.save(
        session,
        conversation.id,
        step=previous,
        data=conversation.data,
        expires_at=_expiry(settings),
    )
    return reply(PROMPTS[previous])


def summary(conversation_id: Any, data: dict[str, Any]) -> Outbound:
    customer = mask_msisdn(data["phone"])
    if data.get("name"):
        customer = f"{data['name']} ({customer})"
    text = texts.FLOW_SUMMARY.format(
        customer=customer, amount=format_kes(data["amount_cents"]), description=data["description"]
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
