"""360dialog Cloud API client: HTTP and the wire format only (no database, no domain).

Base URL `https://waba-v2.360dialog.io` (or the simulator); every call carries the channel's
`D360-API-KEY`. Cloud bodies need `"messaging_product": "whatsapp"`, and the send path is
`/messages` with no phone-number id and no `/v1` (that was On-Premise).
https://docs.360dialog.com/docs/guides

Requests the Cloud API would refuse (too many buttons, a title over 20 characters, …) are refused
here, before any HTTP call, as `WhatsAppError(kind="rejected")`: such a message can never be sent,
and finding out locally keeps it out of the provider's error counts. Timeouts come from the
injected client (`invoiceiq.kit.http.make_http_client`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from invoiceiq.whatsapp.errors import WhatsAppError, error_from_response, error_from_transport

# Limits of the Cloud API, checked before sending.
# Text body ≤ 4,096 (reference/whatsapp-360dialog.md §2.1).
TEXT_BODY_MAX = 4096
# Reply buttons: 1–3 buttons, title ≤ 20 and unique, id ≤ 256, body ≤ 1024, header/footer ≤ 60.
# https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/interactive-reply-buttons-messages
BUTTONS_MIN, BUTTONS_MAX = 1, 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
INTERACTIVE_BODY_MAX = 1024
HEADER_FOOTER_MAX = 60
# Document caption ≤ 1024; media ≤ 100 MB on the Cloud API.
# https://docs.360dialog.com/docs/messaging/message-types/document
CAPTION_MAX = 1024
MEDIA_MAX_BYTES = 100 * 1024 * 1024
# Meta refuses a template parameter with a newline, a tab or more than four spaces in a row, so
# a multi-line description would fail only at send time (seen by many integrations, e.g.
# https://github.com/netflie/whatsapp-cloud-api/issues/201).
_BAD_TEMPLATE_PARAM = re.compile(r"[\n\r\t]| {5,}")
# `to` is a wa_id: country code and number, digits only; a leading + is tolerated by the API.
_RECIPIENT = re.compile(r"^\+?\d{6,15}$")


@dataclass(frozen=True)
class SentMessage:
    """The provider accepted the message; `message_id` is its wamid. Not yet delivered."""

    message_id: str


@dataclass(frozen=True)
class DocumentHeader:
    """A reply-button message can carry the PDF itself as its header: one message, not two."""

    media_id: str
    filename: str


class WhatsAppClient:
    """One 360dialog channel (phone number). Every method raises `WhatsAppError` on failure."""

    def __init__(self, base_url: str, api_key: str, http: httpx.AsyncClient) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http

    # Sending ------------------------------------------------------------------------------

    async def send_text(self, *, to: str, body: str, preview_url: bool = False) -> SentMessage:
        _check_recipient(to)
        _check_length("text body", body, TEXT_BODY_MAX)
        return await self._send(to, "text", {"body": body, "preview_url": preview_url})

    async def send_buttons(
        self,
        *,
        to: str,
        body: str,
        buttons: Sequence[tuple[str, str]],
        header: str | DocumentHeader | None = None,
        footer: str | None = None,
    ) -> SentMessage:
        """Reply buttons as (id, title) pairs; a tap comes back with the id."""
        _check_recipient(to)
        _check_buttons(buttons)
        _check_length("button message body", body, INTERACTIVE_BODY_MAX)
        interactive: dict[str, Any] = {
            "type": "button",
            "body": {"text": body},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": button_id, "title": title}}
                    for button_id, title in buttons
                ]
            },
        }
        if isinstance(header, DocumentHeader):
            interactive["header"] = {
                "type": "document",
                "document": {"id": header.media_id, "filename": header.filename},
            }
        elif header is not None:
            _check_length("header", header, HEADER_FOOTER_MAX)
            interactive["header"] = {"type": "text", "text": header}
        if footer is not None:
            _check_length("footer", footer, HEADER_FOOTER_MAX)
            interactive["footer"] = {"text": footer}
        return await self._send(to, "interactive", interactive)

    async def send_template(
        self,
        *,
        to: str,
        name: str,
        language: str,
        body_params: Sequence[str],
        button_payloads: Sequence[str] = (),
    ) -> SentMessage:
        """An approved template; `button_payloads[i]` is what a tap on quick reply i returns.

        https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/components
        """
        _check_recipient(to)
        if not name:
            raise _refuse("template name is required")
        for param in body_params:
            if not param.strip():
                raise _refuse("template parameters must not be empty")
            if _BAD_TEMPLATE_PARAM.search(param):
                raise _refuse("template parameters cannot hold newlines, tabs or 5+ spaces")
        components: list[dict[str, Any]] = []
        if body_params:
            components.append(
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": p} for p in body_params],
                }
            )
        for index, payload in enumerate(button_payloads):
            if not payload:
                raise _refuse("quick-reply payloads must not be empty")
            components.append(
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": str(index),  # a string, as the API defines it
                    "parameters": [{"type": "payload", "payload": payload}],
                }
            )
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:
            template["components"] = components
        return await self._send(to, "template", template)

    async def send_document(
        self, *, to: str, media_id: str, filename: str, caption: str | None = None
    ) -> SentMessage:
        """A document sent by media id (upload first; recommended over links)."""
        _check_recipient(to)
        document: dict[str, Any] = {"id": media_id, "filename": filename}
        if caption is not None:
            _check_length("caption", caption, CAPTION_MAX)
            document["caption"] = caption
        return await self._send(to, "document", document)

    # Media, read receipts, webhook ----------------------------------------------------------

    async def upload_media(self, *, content: bytes, mime_type: str, filename: str) -> str:
        """Uploads a file and returns its media id (kept 30 days by the Cloud API).

        https://docs.360dialog.com/partner/messaging/media-messages/upload-retrieve-delete-media
        """
        if not content or len(content) > MEDIA_MAX_BYTES:
            raise _refuse("media must be 1 byte to 100 MB")
        answer = await self._request(
            "POST",
            "/media",
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename, content, mime_type)},
        )
        media_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(media_id, str | int) or isinstance(media_id, bool) or media_id == "":
            raise WhatsAppError("ambiguous", "media upload answered without an id")
        return str(media_id)

    async def mark_read(self, *, message_id: str) -> None:
        """Marks an inbound message (and those before it) as read: blue ticks for the sender."""
        await self._request(
            "POST",
            "/messages",
            json={"messaging_product": "whatsapp", "status": "read", "message_id": message_id},
        )

    async def register_webhook(self, *, url: str, headers: Mapping[str, str]) -> None:
        """Tells 360dialog where to post this number's webhooks and which headers to add.

        The headers carry our shared secret: behind 360dialog there is no Meta signature to
        check (https://docs.360dialog.com/docs/hub/webhook-url.md). For the Cloud API the URL
        may not contain `_` in its host nor an explicit port
        (https://docs.360dialog.com/partner/messaging/receiving-messages-via-webhook/multiple-webhooks-per-phone-number);
        360dialog itself enforces that, the simulator does not.
        """
        await self._request(
            "POST", "/v1/configs/webhook", json={"url": url, "headers": dict(headers)}
        )

    # Plumbing -----------------------------------------------------------------------------

    async def _send(self, to: str, kind: str, content: dict[str, Any]) -> SentMessage:
        answer = await self._request(
            "POST",
            "/messages",
            json={
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": kind,
                kind: content,
            },
        )
        return SentMessage(message_id=_wamid(answer))

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed JSON answer (None when a 2xx carries none), or a WhatsAppError."""
        try:
            response = await self._http.request(
                method,
                self._base + path,
                headers={"D360-API-KEY": self._api_key, "Accept": "application/json"},
                **kwargs,
            )
        except httpx.TransportError as error:
            raise error_from_transport(error) from error
        if not response.is_success:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError:
            return None


def _wamid(answer: Any) -> str:
    # A 2xx without the id: probably accepted, but nothing confirms it.
    messages = answer.get("messages") if isinstance(answer, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        message_id = messages[0].get("id")
        if isinstance(message_id, str) and message_id:
            return message_id
    raise WhatsAppError("ambiguous", "send accepted without a message id")


def _refuse(title: str) -> WhatsAppError:
    return WhatsAppError("rejected", title)


def _check_recipient(to: str) -> None:
    if not _RECIPIENT.match(to):
        raise _refuse("recipient must be a wa_id: country code and number, digits only")


def _check_length(what: str, text: str, limit: int) -> None:
    if not text.strip():
        raise _refuse(f"{what} must not be empty")
    if len(text) > limit:
        raise _refuse(f"{what} longer than {limit} characters")


def _check_buttons(buttons: Sequence[tuple[str, str]]) -> None:
    if not BUTTONS_MIN <= len(buttons) <= BUTTONS_MAX:
        raise _refuse(f"reply buttons: {BUTTONS_MIN} to {BUTTONS_MAX}, got {len(buttons)}")
    ids = [button_id for button_id, _ in buttons]
    titles = [title for _, title in buttons]
    for button_id, title in buttons:
        if not button_id or len(button_id) > BUTTON_ID_MAX:
            raise _refuse(f"button id must be 1 to {BUTTON_ID_MAX} characters")
        if not title.strip() or len(title) > BUTTON_TITLE_MAX:
            raise _refuse(f"button title must be 1 to {BUTTON_TITLE_MAX} characters")
    if len(set(ids)) != len(ids):
        raise _refuse("button ids must be unique")
    if len(set(titles)) != len(titles):
        raise _refuse("button titles must be unique")
