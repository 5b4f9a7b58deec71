"""WhatsApp wire events ↔ domain: who wrote what, and which delivery status changed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from invoiceiq.conversations.schemas import IncomingMessage
from invoiceiq.whatsapp.schemas import InboundMessage, StatusUpdate


def to_incoming(message: InboundMessage) -> IncomingMessage | None:
    """None when the sender has no phone number (a business-scoped id only): we cannot reply
    to it by number, nor match it to invoices, so it is stored and acknowledged only."""
    if not message.sender:
        return None
    return IncomingMessage(
        wamid=message.wamid,
        phone=message.sender,
        kind=message.kind,
        text=message.text,
        button_id=message.button_id,
    )


def incoming_to_json(message: IncomingMessage) -> dict[str, Any]:
    return asdict(message)


def incoming_from_json(data: dict[str, Any]) -> IncomingMessage:
    return IncomingMessage(**data)


def status_to_json(update: StatusUpdate) -> dict[str, Any]:
    return {
        "message_id": update.message_id,
        "status": update.status,
        "at": update.timestamp.isoformat(),
        "error_code": str(update.error_code) if update.error_code is not None else None,
    }
