"""Webhook payloads of the WhatsApp Cloud API (as 360dialog delivers them) and their flattening.

The envelope is `object / entry[] / changes[] / value`; every level is a list and one POST can
carry several entries, changes, messages and statuses, so every item is read, not just the
first. https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages

Parsing is lenient where WhatsApp grows: unknown fields are ignored, any message type parses
(what the product does not act on becomes kind "unsupported"), and a sender known only by a
business-scoped user id (no `wa_id`, no `from`) is fine.
https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids/
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"^\d+$")


class _Wire(BaseModel):
    # A number where the documents show a string (an id, a wa_id, a product name) is read as
    # its text: refusing it would drop the messages beside it.
    model_config = ConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, coerce_numbers_to_str=True
    )


class ErrorData(_Wire):
    details: str | None = None


class WebhookError(_Wire):
    """An asynchronous error: in `statuses[].errors`, `messages[].errors` or `value.errors`."""

    code: int | None = None
    title: str | None = None
    message: str | None = None
    error_data: ErrorData | None = None
    href: str | None = None


class Profile(_Wire):
    name: str | None = None


class Contact(_Wire):
    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile: Profile | None = None


class Metadata(_Wire):
    display_phone_number: str | None = None
    phone_number_id: str | None = None


class Text(_Wire):
    body: str = ""


class ButtonReply(_Wire):
    id: str
    title: str | None = None


class ListReply(_Wire):
    id: str
    title: str | None = None
    description: str | None = None


class Interactive(_Wire):
    type: str = "unknown"
    button_reply: ButtonReply | None = None
    list_reply: ListReply | None = None


class TemplateButtonTap(_Wire):
    """A tap on a template's quick-reply button: a different shape from `interactive`.
    https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/button/
    """

    payload: str | None = None
    text: str | None = None


class Context(_Wire):
    id: str | None = None
    from_: str | None = Field(default=None, alias="from")
    forwarded: bool | None = None


class Message(_Wire):
    id: str
    timestamp: datetime
    type: str = "unknown"
    from_: str | None = Field(default=None, alias="from")
    from_user_id: str | None = None
    text: Text | None = None
    interactive: Interactive | None = None
    button: TemplateButtonTap | None = None
    context: Context | None = None
    errors: list[WebhookError] = Field(default_factory=list)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


class Status(_Wire):
    """One delivery status of a message we sent. Order is not guaranteed: `read` may come
    without `delivered`, and `delivered` after `failed`; keep the state monotonic.
    https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status/
    """

    id: str
    status: str
    timestamp: datetime
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[WebhookError] = Field(default_factory=list)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


class Value(_Wire):
    messaging_product: str | None = None
    metadata: Metadata | None = None
    contacts: list[Contact] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    statuses: list[Status] = Field(default_factory=list)
    errors: list[WebhookError] = Field(default_factory=list)


def _to_utc(value: datetime) -> datetime:
    """The time in UTC; one that has none (year 1 at a positive offset) is not a timestamp."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None


def _identity_only(item: Any) -> dict[str, Any] | None:
    """A message reduced to who sent it and when, for content that does not parse."""
    if not isinstance(item, dict) or "status" in item:
        return None
    keys = ("id", "timestamp", "from", "from_user_id", "type")
    return {key: item[key] for key in keys if key in item}


_MESSAGE = TypeAdapter(Message)
_STATUS = TypeAdapter(Status)


def _parses(adapter: TypeAdapter[Any], item: Any) -> bool:
    try:
        adapter.validate_python(item)
    except ValidationError:
        return False
    return True


def _kept_messages(items: list[Any]) -> list[Any]:
    """A message whose content does not parse is kept by its id as "not understood"; one
    without an id or a timestamp is dropped."""
    kept = []
    for item in items:
        if _parses(_MESSAGE, item):
            kept.append(item)
        elif (bare := _identity_only(item)) is not None and _parses(_MESSAGE, bare):
            kept.append(bare)
        else:
            logger.warning("whatsapp webhook: dropped an item without id or timestamp")
    return kept


def _kept_statuses(items: list[Any]) -> list[Any]:
    kept = []
    for item in items:
        if _parses(_STATUS, item):
            kept.append(item)
        else:
            logger.warning("whatsapp webhook: dropped an item without id or timestamp")
    return kept


class Change(_Wire):
    field: str = "messages"
    value: Value = Field(default_factory=Value)


class Entry(_Wire):
    id: str | None = None
    changes: list[Change] = Field(default_factory=list)


class WebhookEnvelope(_Wire):
    object: str | None = None
    entry: list[Entry] = Field(default_factory=list)


def envelope_from_json(body: bytes | str) -> WebhookEnvelope | None:
    """The envelope in `body`, or None when it is not one; ValueError (or RecursionError, for
    nesting deeper than Python parses) when it is not JSON.

    The usual webhook parses in one go, straight from the bytes. Only when that fails is the
    document read as Python reads JSON, and item by item (`envelope_from_document`): pydantic's
    parser is stricter than Python's (a lone surrogate in a string, say), and no sender's
    message is refused over that.
    """
    try:
        return WebhookEnvelope.model_validate_json(body)
    except ValidationError:
        pass
    return envelope_from_document(json.loads(body))


def envelope_from_document(document: Any) -> WebhookEnvelope | None:
    """The envelope in a JSON document, or None when it is not one.

    One odd message or status must not cost the rest of the batch: a message whose content
    does not parse is kept by its id as "not understood"; an item without an id or a timestamp
    is dropped.
    """
    try:
        return WebhookEnvelope.model_validate(document)
    except ValidationError:
        pass
    try:
        return WebhookEnvelope.model_validate(_keep_what_parses(document))
    except ValidationError:
        return None


def _keep_what_parses(document: Any) -> Any:
    """`document` with what does not parse left out, at the smallest level it can be: a message
    or status, a contact or error, an entry's id, a change, an entry (a copy: the caller's
    document is left as it is)."""
    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        return document
    entries = []
    for entry in document["entry"]:
        if isinstance(entry, dict) and isinstance(entry.get("changes"), list):
            changes = [_kept_change(change) for change in entry["changes"]]
            entry = {**entry, "changes": [change for change in changes if change is not None]}
        if isinstance(entry, dict) and not _parses(_ENTRY, entry):
            entry = {key: item for key, item in entry.items() if key != "id"}  # only informative
        if _parses(_ENTRY, entry):
            entries.append(entry)
        else:
            logger.warning("whatsapp webhook: dropped an entry that is not one")
    return {**document, "entry": entries}


def _kept_change(change: Any) -> Any:
    """The change with its lists reduced to what parses; None when even that is no change."""
    if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
        kept = change if _parses(_CHANGE, change) else None
    else:
        value = dict(change["value"])
        for key, keep in _LIST_FILTERS.items():
            if isinstance(value.get(key), list):
                value[key] = keep(value[key])
        kept = {**change, "value": value} if _parses(_CHANGE, {**change, "value": value}) else None
    if kept is None:
        logger.warning("whatsapp webhook: dropped a change that is not one")
    return kept


def _kept(adapter: TypeAdapter[Any]) -> Callable[[list[Any]], list[Any]]:
    def keep(items: list[Any]) -> list[Any]:
        return [item for item in items if _parses(adapter, item)]

    return keep


_CHANGE = TypeAdapter(Change)
_ENTRY = TypeAdapter(Entry)
_LIST_FILTERS: dict[str, Callable[[list[Any]], list[Any]]] = {
    "messages": _kept_messages,
    "statuses": _kept_statuses,
    "contacts": _kept(TypeAdapter(Contact)),
    "errors": _kept(TypeAdapter(WebhookError)),
}


# Flattened events ---------------------------------------------------------------------------

InboundKind = Literal["text", "button", "unsupported", "event"]


@dataclass(frozen=True)
class InboundMessage:
    """A message a person sent the business. `sender` is the wa_id (digits) when WhatsApp gave
    one; `user_id` the business-scoped id. At least one of them identifies the person."""

    wamid: str
    sender: str | None
    user_id: str | None
    timestamp: datetime
    kind: InboundKind
    text: str | None
    button_id: str | None
    contact_name: str | None
    raw_type: str = "text"


@dataclass(frozen=True)
class StatusUpdate:
    message_id: str
    recipient: str | None
    status: str
    timestamp: datetime
    error_code: int | None
    error_title: str | None


def inbound_events(
    envelope: WebhookEnvelope,
) -> tuple[list[InboundMessage], list[StatusUpdate]]:
    """Every message and status of every entry and change, in the order they came."""
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    for entry in envelope.entry:
        for change in entry.changes:
            if change.field != "messages":
                continue  # template reviews, account updates…: other subscriptions
            value = change.value
            messages.extend(_inbound(m, value.contacts) for m in value.messages)
            statuses.extend(_status(s) for s in value.statuses)
    return messages, statuses


def system_errors(envelope: WebhookEnvelope) -> list[WebhookError]:
    """`value.errors[]`: problems WhatsApp reports about the number itself, not one message."""
    return [e for entry in envelope.entry for c in entry.changes for e in c.value.errors]


def _inbound(message: Message, contacts: list[Contact]) -> InboundMessage:
    sender, user_id = _identity(message)
    contact = _contact_for(sender, user_id, contacts)
    if contact is not None:
        user_id = user_id or contact.user_id
        sender = sender or (
            contact.wa_id if contact.wa_id and _DIGITS.match(contact.wa_id) else None
        )
    kind, text, button_id = _content(message)
    return InboundMessage(
        wamid=message.id,
        sender=sender,
        user_id=user_id,
        timestamp=message.timestamp.astimezone(UTC),
        kind=kind,
        text=text,
        button_id=button_id,
        contact_name=contact.profile.name if contact and contact.profile else None,
        raw_type=message.type,
    )


def _identity(message: Message) -> tuple[str | None, str | None]:
    sender = message.from_
    if sender is not None and not _DIGITS.match(sender):
        # Not a phone number: with usernames, `from` may carry the business-scoped id instead.
        return None, message.from_user_id or sender
    return sender, message.from_user_id


def _contact_for(
    sender: str | None, user_id: str | None, contacts: list[Contact]
) -> Contact | None:
    for contact in contacts:
        if sender is not None and contact.wa_id == sender:
            return contact
        if user_id is not None and contact.user_id == user_id:
            return contact
    # A single contact belongs to the message even when neither id is given on both sides.
    if len(contacts) == 1 and (sender is None or contacts[0].wa_id is None):
        return contacts[0]
    return None


# Not a person writing to the business: answering a 👍 with the invoice again is noise.
_EVENT_TYPES = frozenset({"reaction", "system"})


def _content(message: Message) -> tuple[InboundKind, str | None, str | None]:
    """(kind, text, button id). A reply-button or list tap and a template quick reply are all
    "button"; a reaction or a system notice (a number changed) is an "event", which nobody
    wrote to be answered; the rest of WhatsApp's types are "unsupported" (answered with help)."""
    if message.type in _EVENT_TYPES:
        return "event", None, None
    if message.type == "text" and message.text is not None:
        return "text", message.text.body, None
    if message.type == "interactive" and message.interactive is not None:
        reply = message.interactive.button_reply or message.interactive.list_reply
        if message.interactive.type in {"button_reply", "list_reply"} and reply is not None:
            return "button", reply.title, reply.id
    if message.type == "button" and message.button is not None:
        if message.button.payload:
            return "button", message.button.text, message.button.payload
        # A quick reply sent without a payload returns only its label: treat it as typed text.
        if message.button.text:
            return "text", message.button.text, None
    return "unsupported", None, None


def _status(status: Status) -> StatusUpdate:
    first = status.errors[0] if status.errors else None
    recipient = status.recipient_id
    return StatusUpdate(
        message_id=status.id,
        recipient=recipient if recipient and _DIGITS.match(recipient) else None,
        status=status.status,
        timestamp=status.timestamp.astimezone(UTC),
        error_code=first.code if first else None,
        error_title=(first.title or first.message) if first else None,
    )
