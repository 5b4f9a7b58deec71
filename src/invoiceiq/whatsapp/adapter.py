"""WhatsApp wire events ↔ domain: who wrote what, and which delivery status changed."""

from __future__ import annotations

from typing import Any

from invoiceiq.conversations.schemas import IncomingMessage
from invoiceiq.kit.text import storable
from invoiceiq.whatsapp.schemas import InboundMessage, StatusUpdate

# E.164: at most 15 digits, country code included (ITU-T E.164 §6.1).
E164_MAX_DIGITS = 15
# Real wamids are ~60 characters; the message log keeps 128.
MAX_ID_CHARS = 128


def to_incoming(message: InboundMessage) -> IncomingMessage | None:
    """None when the sender has no phone number (a business-scoped id only, or digits no phone
    number has): we cannot reply to it by number, nor match it to invoices, so it is stored
    and acknowledged only."""
    sender = message.sender
    if not sender or not (sender.isascii() and sender.isdigit()) or len(sender) > E164_MAX_DIGITS:
        return None
    return IncomingMessage(
        wamid=message.wamid,
        phone=sender,
        kind=message.kind,
        text=storable(message.text),
        button_id=storable(message.button_id),
    )


def is_storable_id(value: str) -> bool:
    """Whether an id can be a key of ours: one WhatsApp could have issued, storable as is."""
    return 0 < len(value) <= MAX_ID_CHARS and storable(value) == value


def incoming_to_json(message: IncomingMessage) -> dict[str, Any]:
    # Field by field rather than dataclasses.asdict (a deep copy): this runs for every message.
    return {
        "wamid": message.wamid,
        "phone": message.phone,
        "kind": message.kind,
        "text": message.text,
        "button_id": message.button_id,
    }


def incoming_from_json(data: dict[str, Any]) -> IncomingMessage:
    return IncomingMessage(**data)


def status_to_json(update: StatusUpdate) -> dict[str, Any]:
    return {
        "message_id": update.message_id,
        "status": update.status,
        "at": update.timestamp.isoformat(),
        "error_code": str(update.error_code) if update.error_code is not None else None,
    }
