"""The 360dialog side of the offline simulator (DESIGN §8): a fake Cloud API over real HTTP.

It enforces what the real service enforces and the product must cope with: the API key, the
payload rules (reply buttons, template names and parameter counts from the repo's definitions),
the 24-hour customer window (a free-form message outside it is accepted with a wamid, then fails
later with 131047, https://github.com/megaapp977/stack/issues/117), delivery statuses posted to
the registered webhook in the Cloud API envelope (possibly before the send's own answer, as on
the real service), and the faults of `SimulatorConfig.faults` rolled with the seeded dice.

State lives in memory. The fake runs on one event loop and mutates its state only between
`await`s, so concurrent requests need no lock; fault dice are rolled synchronously when a
request arrives, so a seed repeats the same faults for the same sequence of requests.
A status webhook the app does not take is posted again for `webhook_retry_s`, as 360dialog
does; a phone's own message is posted once (the control API answers with the app's status, and
the caller decides). `faults.webhooks.duplicate` posts duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from invoiceiq.kit.clock import utcnow
from invoiceiq.simulator.config import SimulatorSettings
from invoiceiq.whatsapp.client import BUTTON_TITLE_MAX, MEDIA_MAX_BYTES
from invoiceiq.whatsapp.errors import REENGAGEMENT_REQUIRED
from invoiceiq.whatsapp.simulator_requests import (
    Refused,
    check_message,
    check_product,
    check_recipient,
    gateway_refusal,
    graph_refusal,
    json_object,
    play_faults,
)
from invoiceiq.whatsapp.simulator_webhooks import (
    BUSINESS_NUMBER,
    WebhookSender,
    message_envelope,
    status_envelope,
)
from invoiceiq.whatsapp.templates import TemplateDefinition


class WebhookNotRegistered(RuntimeError):
    """`phone_writes` before anyone called `POST /v1/configs/webhook`."""


@dataclass(frozen=True)
class StoredMedia:
    content: bytes
    mime_type: str
    filename: str


@dataclass
class _Received:
    """One message the phone received (an inbox item)."""

    wamid: str
    type: str
    text: str | None
    buttons: list[dict[str, str]]
    template: dict[str, Any] | None
    at: datetime
    payload: dict[str, Any]
    status: str = "accepted"
    error_code: int | None = None
    # "timeout_after" when the fake took the message but held its answer past the client's
    # timeout: the sender never learned of this copy, so a retry may deliver it again.
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "wamid": self.wamid,
            "type": self.type,
            "text": self.text,
            "buttons": [dict(b) for b in self.buttons],
            "template": self.template,
            "status": self.status,
            "error_code": self.error_code,
            "at": self.at.isoformat(),
            "payload": self.payload,
            "fault": self.fault,
        }


@dataclass
class _Phone:
    received: list[_Received] = field(default_factory=list)
    last_inbound: datetime | None = None


class WhatsAppFake:
    """The fake 360dialog API (`router`, mounted at /simulator/whatsapp) and its phones."""

    def __init__(
        self,
        settings: SimulatorSettings,
        templates: Mapping[str, TemplateDefinition],
        *,
        api_key: str,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._templates = dict(templates)
        self._api_key = api_key
        self._webhooks = WebhookSender(settings, http)
        self._clear()
        self.router = APIRouter()
        self.router.add_api_route(
            "/messages", self._post_messages, methods=["POST"], include_in_schema=False
        )
        self.router.add_api_route(
            "/media", self._post_media, methods=["POST"], include_in_schema=False
        )
        self.router.add_api_route(
            "/v1/configs/webhook",
            self._post_webhook_config,
            methods=["POST"],
            include_in_schema=False,
        )

    def _clear(self) -> None:
        self._phones: dict[str, _Phone] = {}
        self._inbound: dict[str, str] = {}  # wamid written by a phone → msisdn
        self._read: set[str] = set()
        self._media: dict[str, StoredMedia] = {}
        self._request_count = 0

    # Control side (the simulator's control API and tests) ------------------------------------

    def register_webhook(self, url: str, headers: Mapping[str, str]) -> None:
        self._webhooks.register(url, headers)

    @property
    def webhook_url(self) -> str | None:
        return self._webhooks.url

    @property
    def request_count(self) -> int:
        """API requests that reached the fake (messages and media, refused ones included)."""
        return self._request_count

    async def phone_writes(
        self,
        msisdn: str,
        *,
        text: str | None = None,
        button_id: str | None = None,
        kind: Literal["reply", "template"] = "reply",
        raw: dict[str, Any] | None = None,
    ) -> tuple[str, int]:
        """The phone sends the business a message: its webhook is posted to the app.

        Exactly one of `text`, `button_id` (a tap on a reply button, or on a template's quick
        reply when `kind="template"`) or `raw` (a Cloud API message object; `id`, `timestamp`
        and `from` are filled in when missing, and a `from_user_id` without `from` stands for a
        sender known only by a business-scoped id). Returns (wamid, the app's HTTP status, or
        NO_ANSWER when it could not be reached).
        """
        if sum(x is not None for x in (text, button_id, raw)) != 1:
            raise ValueError("give exactly one of text, button_id or raw")
        if not msisdn.isdigit():
            raise ValueError("msisdn: digits only, country code first")
        if self._webhooks.url is None:
            raise WebhookNotRegistered("no webhook registered: POST /v1/configs/webhook first")
        message = self._inbound_message(msisdn, text, button_id, kind, raw)
        wamid: str = message["id"]
        # Any message from the person opens the customer window, a button tap included.
        self._phone(msisdn).last_inbound = utcnow()
        self._inbound[wamid] = msisdn
        duplicate = self._settings.dice.roll(self._settings.config.faults.webhooks.duplicate)
        envelope = message_envelope(msisdn, message)
        status = await self._webhooks.post(envelope)
        if duplicate:
            await self._webhooks.post(envelope)
        return wamid, status

    def inbox(self, msisdn: str, after: str | None = None) -> list[dict[str, Any]]:
        """What the phone received, oldest first; after `after` when that wamid is known."""
        items = self._phone(msisdn).received
        if after is not None:
            for position, item in enumerate(items):
                if item.wamid == after:
                    items = items[position + 1 :]
                    break
        return [item.as_dict() for item in items]

    def set_last_inbound(self, msisdn: str, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        self._phone(msisdn).last_inbound = at

    def is_read(self, wamid: str) -> bool:
        """Whether the business marked this inbound message as read."""
        return wamid in self._read

    def media(self, media_id: str) -> StoredMedia | None:
        return self._media.get(media_id)

    def reset(self) -> None:
        """Forget phones, messages and media; the webhook registration stays (it is the
        channel's configuration, made once at start-up)."""
        self._webhooks.cancel_pending()
        self._clear()

    async def aclose(self) -> None:
        await self._webhooks.aclose()

    # API side (what the app's WhatsAppClient calls) -------------------------------------------

    async def _post_messages(self, request: Request) -> Response:
        self._request_count += 1
        try:
            self._authorize(request)
            hold_after = await play_faults(self._settings)
            body = await json_object(request)
            # Mark-as-read shares the send path: {"status": "read", "message_id": …}.
            read = body.get("status") == "read"
            answer = self._mark_read(body) if read else self._accept(body, held=hold_after)
            if hold_after:
                # The message is taken and will be delivered; only the answer is late.
                await asyncio.sleep(self._settings.config.timeout_hold_s)
            return JSONResponse(answer)
        except Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    async def _post_media(self, request: Request) -> Response:
        self._request_count += 1
        try:
            self._authorize(request)
            hold_after = await play_faults(self._settings)
            form = await request.form()
            upload = form.get("file")
            if form.get("messaging_product") != "whatsapp":
                raise graph_refusal(100, "The parameter messaging_product is required.")
            if not isinstance(upload, UploadFile):
                raise graph_refusal(100, "The parameter file is required.")
            content = await upload.read()
            if not content or len(content) > MEDIA_MAX_BYTES:
                raise graph_refusal(131053, "Media upload error", "file size out of range")
            kind = form.get("type")
            media_id = str(10**15 + secrets.randbelow(9 * 10**15))
            self._media[media_id] = StoredMedia(
                content=content,
                mime_type=kind if isinstance(kind, str) else upload.content_type or "",
                filename=upload.filename or "file",
            )
            if hold_after:
                await asyncio.sleep(self._settings.config.timeout_hold_s)
            return JSONResponse({"id": media_id})
        except Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    async def _post_webhook_config(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = await json_object(request)
            url, headers = body.get("url"), body.get("headers", {})
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise gateway_refusal(400, "url must be an absolute http(s) URL")
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise gateway_refusal(400, "headers must map strings to strings")
            self.register_webhook(url, headers)
            return JSONResponse({"url": url})
        except Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    def _authorize(self, request: Request) -> None:
        given = request.headers.get("D360-API-KEY", "")
        if not hmac.compare_digest(given.encode(), self._api_key.encode()):
            raise gateway_refusal(401, "Invalid api_key")

    def _mark_read(self, body: dict[str, Any]) -> dict[str, Any]:
        check_product(body)
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or message_id not in self._inbound:
            raise graph_refusal(100, "Invalid parameter", "message_id is not a known message")
        self._read.add(message_id)
        return {"success": True}

    def _accept(self, body: dict[str, Any], *, held: bool = False) -> dict[str, Any]:
        check_product(body)
        to = check_recipient(body)
        content = check_message(body, self._templates, self._media)
        msisdn = to.lstrip("+")
        phone = self._phone(msisdn)
        item = _Received(
            wamid=_new_wamid(),
            type=content.type,
            text=content.text,
            buttons=content.buttons,
            template=content.template,
            at=utcnow(),
            payload=body,
            fault="timeout_after" if held else None,
        )
        phone.received.append(item)
        outside_window = content.template is None and not self._in_window(phone)
        statuses = ["failed"] if outside_window else ["sent", "delivered", "read"]
        self._webhooks.post_statuses(statuses, partial(self._record_status, msisdn, item))
        message: dict[str, Any] = {"id": item.wamid}
        if content.template is not None:
            message["message_status"] = "accepted"
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": msisdn}],
            "messages": [message],
        }

    def _in_window(self, phone: _Phone) -> bool:
        if phone.last_inbound is None:
            return False
        age = (utcnow() - phone.last_inbound).total_seconds()
        return age <= self._settings.config.customer_window_s

    def _record_status(self, msisdn: str, item: _Received, name: str) -> dict[str, Any]:
        """Record the status on the phone's copy of the message; its webhook envelope."""
        if name == "failed":
            item.status, item.error_code = "failed", REENGAGEMENT_REQUIRED
        else:
            item.status = name
        return status_envelope(item.wamid, msisdn, name, template=item.template is not None)

    # Helpers ---------------------------------------------------------------------------------

    def _phone(self, msisdn: str) -> _Phone:
        return self._phones.setdefault(msisdn, _Phone())

    def _inbound_message(
        self,
        msisdn: str,
        text: str | None,
        button_id: str | None,
        kind: Literal["reply", "template"],
        raw: dict[str, Any] | None,
    ) -> dict[str, Any]:
        base = {"id": _new_wamid(), "timestamp": str(int(utcnow().timestamp()))}
        if raw is not None:
            message = {**base, **raw}
            if "from" not in message and "from_user_id" not in message:
                message["from"] = msisdn
            return message
        base["from"] = msisdn
        if text is not None:
            return {**base, "type": "text", "text": {"body": text}}
        assert button_id is not None
        title, offered_in = self._offered(msisdn, button_id)
        # Taps on buttons carry the message that offered them as context.
        context = {"context": {"from": BUSINESS_NUMBER, "id": offered_in}} if offered_in else {}
        if kind == "template":
            button = {"payload": button_id, "text": title}
            return {**base, **context, "type": "button", "button": button}
        reply = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        return {**base, **context, "type": "interactive", "interactive": reply}

    def _offered(self, msisdn: str, button_id: str) -> tuple[str, str | None]:
        """(title, wamid) of the latest message that offered this button id to the phone.
        A button never offered (a test's own choice) gets its id as title and no context."""
        for item in reversed(self._phone(msisdn).received):
            for button in item.buttons:
                if button["id"] == button_id:
                    return button["title"], item.wamid
        return button_id[:BUTTON_TITLE_MAX], None


def _new_wamid() -> str:
    # Opaque, base64-ish like the real ones (which contain + / =): store as text, never parse.
    return "wamid." + base64.b64encode(b"SIM" + secrets.token_bytes(29)).decode()
