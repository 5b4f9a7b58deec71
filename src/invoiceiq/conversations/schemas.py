"""An inbound chat message as the domain sees it (the WhatsApp adapter maps the wire to this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class IncomingMessage:
    wamid: str
    phone: str
    kind: Literal["text", "button", "unsupported", "event"]
    text: str | None = None
    button_id: str | None = None
