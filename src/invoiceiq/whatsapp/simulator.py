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
import logging
import secrets
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from invoiceiq.kit.clock import utcnow
from invoiceiq.simulator.config import SimulatorSettings
from invoiceiq.whatsapp.client import (
    BUTTON_ID_MAX,
    BUTTON_TITLE_MAX,
    BUTTONS_MAX,
    CAPTION_MAX,
    HEADER_FOOTER_MAX,
    INTERACTIVE_BODY_MAX,
    MEDIA_MAX_BYTES,
    TEXT_BODY_MAX,
)
from invoiceiq.whatsapp.errors import (
    REENGAGEMENT_REQUIRED,
    gateway_error_body,
    graph_error_body,
)
from invoiceiq.whatsapp.templates import TemplateDefinition

logger = logging.getLogger(__name__)

# The simulated business number, as WhatsApp names it in webhooks.
BUSINESS_NUMBER = "254700000000"
PHONE_NUMBER_ID = "100000000000001"
WABA_ID = "200000000000001"
# 360dialog counts a webhook as failed when the answer takes over 5 s.
# https://docs.360dialog.com/partner/messaging/sending-and-receiving-messages/receiving-messages-via-webhook
WEBHOOK_TIMEOUT = httpx.Timeout(5.0)
NO_ANSWER = 0  # phone_writes' status when the app could not be reached at all


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
        self._http = http
        self._webhook_url: str | None = None
        self._webhook_headers: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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
        self._webhook_url = url
        self._webhook_headers = dict(headers)

    @property
    def webhook_url(self) -> str | None:
        return self._webhook_url

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
        if self._webhook_url is None:
            raise WebhookNotRegistered("no webhook registered: POST /v1/configs/webhook first")
        message = self._inbound_message(msisdn, text, button_id, kind, raw)
        wamid: str = message["id"]
        # Any message from the person opens the customer window, a button tap included.
        self._phone(msisdn).last_inbound = utcnow()
        self._inbound[wamid] = msisdn
        duplicate = self._settings.dice.roll(self._settings.config.faults.webhooks.duplicate)
        contact: dict[str, Any] = {"profile": {"name": f"Phone {msisdn[-4:]}"}}
        if "from" in message:
            contact["wa_id"] = message["from"]
        else:
            contact["user_id"] = message.get("from_user_id")
        envelope = _envelope({"contacts": [contact], "messages": [message]})
        status = await self._post_webhook(envelope)
        if duplicate:
            await self._post_webhook(envelope)
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
        for task in self._tasks:
            task.cancel()
        self._clear()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # API side (what the app's WhatsAppClient calls) -------------------------------------------

    async def _post_messages(self, request: Request) -> Response:
        self._request_count += 1
        try:
            self._authorize(request)
            hold_after = await self._faults_before_work()
            body = await _json_object(request)
            # Mark-as-read shares the send path: {"status": "read", "message_id": …}.
            read = body.get("status") == "read"
            answer = self._mark_read(body) if read else self._accept(body, held=hold_after)
            if hold_after:
                # The message is taken and will be delivered; only the answer is late.
                await asyncio.sleep(self._settings.config.timeout_hold_s)
            return JSONResponse(answer)
        except _Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    async def _post_media(self, request: Request) -> Response:
        self._request_count += 1
        try:
            self._authorize(request)
            hold_after = await self._faults_before_work()
            form = await request.form()
            upload = form.get("file")
            if form.get("messaging_product") != "whatsapp":
                raise _graph(100, "The parameter messaging_product is required.")
            if not isinstance(upload, UploadFile):
                raise _graph(100, "The parameter file is required.")
            content = await upload.read()
            if not content or len(content) > MEDIA_MAX_BYTES:
                raise _graph(131053, "Media upload error", "file size out of range")
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
        except _Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    async def _post_webhook_config(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = await _json_object(request)
            url, headers = body.get("url"), body.get("headers", {})
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise _gateway(400, "url must be an absolute http(s) URL")
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise _gateway(400, "headers must map strings to strings")
            self.register_webhook(url, headers)
            return JSONResponse({"url": url})
        except _Refused as refused:
            return JSONResponse(refused.body, status_code=refused.status)

    def _authorize(self, request: Request) -> None:
        given = request.headers.get("D360-API-KEY", "")
        if not hmac.compare_digest(given.encode(), self._api_key.encode()):
            raise _gateway(401, "Invalid api_key")

    async def _faults_before_work(self) -> bool:
        """Plays the configured faults; returns whether the answer must be held afterwards.

        All dice are rolled before the first await, so the order of rolls is the order in
        which requests arrived.
        """
        faults, dice = self._settings.config.faults.whatsapp, self._settings.dice
        if dice.roll(faults.error_429):
            raise _graph(130429, "Rate limit hit", "throughput reached", status=429)
        if dice.roll(faults.error_5xx):
            raise _graph(131000, "Something went wrong", status=500)
        if dice.roll(faults.timeout_before):
            # Lost on the way in: nothing is recorded, and the answer comes too late.
            await asyncio.sleep(self._settings.config.timeout_hold_s)
            raise _gateway(504, "Gateway timeout")
        return dice.roll(faults.timeout_after)

    def _mark_read(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_product(body)
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or message_id not in self._inbound:
            raise _graph(100, "Invalid parameter", "message_id is not a known message")
        self._read.add(message_id)
        return {"success": True}

    def _accept(self, body: dict[str, Any], *, held: bool = False) -> dict[str, Any]:
        _check_product(body)
        to = _check_recipient(body)
        content = _check_message(body, self._templates, self._media)
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
        self._schedule_statuses(msisdn, item, failed=outside_window)
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

    # Statuses and webhooks -------------------------------------------------------------------

    def _schedule_statuses(self, msisdn: str, item: _Received, *, failed: bool) -> None:
        names = ["failed"] if failed else ["sent", "delivered", "read"]
        dice, chance = self._settings.dice, self._settings.config.faults.webhooks.duplicate
        plan = [(name, dice.roll(chance)) for name in names]  # rolled now, in request order
        delay = self._settings.config.status_delay_ms / 1000
        self._spawn(self._deliver(msisdn, item, plan, delay))

    async def _deliver(
        self, msisdn: str, item: _Received, plan: list[tuple[str, bool]], delay: float
    ) -> None:
        for name, duplicate in plan:
            await asyncio.sleep(delay)
            status: dict[str, Any] = {
                "id": item.wamid,
                "status": name,
                "timestamp": str(int(utcnow().timestamp())),
                "recipient_id": msisdn,
            }
            if name == "failed":
                item.status, item.error_code = "failed", REENGAGEMENT_REQUIRED
                status["errors"] = [dict(_REENGAGEMENT_ERROR)]
            else:
                item.status = name
                category = "utility" if item.template is not None else "service"
                status["pricing"] = {
                    "billable": False,
                    "pricing_model": "PMP",
                    "category": category,
                }
            envelope = _envelope({"statuses": [status]})
            for _ in range(2 if duplicate else 1):
                await self._post_until_taken(envelope)

    async def _post_until_taken(self, envelope: dict[str, Any]) -> None:
        """Post again while the app does not take it, for `webhook_retry_s`; later statuses of
        the message wait behind (reference/whatsapp-360dialog.md §3.6)."""
        deadline = asyncio.get_running_loop().time() + self._settings.config.webhook_retry_s
        pause = 0.2
        while not 200 <= await self._post_webhook(envelope) < 300:
            if asyncio.get_running_loop().time() + pause > deadline:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def _post_webhook(self, envelope: dict[str, Any]) -> int:
        url = self._webhook_url
        if url is None:
            return NO_ANSWER
        try:
            response = await self._http.post(
                url, json=envelope, headers=self._webhook_headers, timeout=WEBHOOK_TIMEOUT
            )
        except httpx.HTTPError as error:
            logger.info("simulator webhook not delivered: %s", type(error).__name__)
            return NO_ANSWER
        return response.status_code

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    """The Cloud API webhook envelope around one change's value."""
    metadata = {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": PHONE_NUMBER_ID}
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "field": "messages",
                        "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
                    }
                ],
            }
        ],
    }


def _new_wamid() -> str:
    # Opaque, base64-ish like the real ones (which contain + / =): store as text, never parse.
    return "wamid." + base64.b64encode(b"SIM" + secrets.token_bytes(29)).decode()


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise _graph(100, "Invalid parameter", "the body is not JSON") from error
    if not isinstance(body, dict):
        raise _graph(100, "Invalid parameter", "the body must be a JSON object")
    return body


# Payload rules, as the Cloud API applies them ---------------------------------------------------
# Codes: 100 invalid parameter (Graph), 131008 required parameter missing, 131009 parameter value
# not valid, 132000 template parameter count mismatch, 132001 template missing in that language.
# https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
INVALID_PARAMETER = 100
MISSING_PARAMETER = 131008
INVALID_VALUE = 131009
TEMPLATE_PARAM_MISMATCH = 132000
TEMPLATE_NOT_FOUND = 132001
_REENGAGEMENT_ERROR: dict[str, Any] = {
    "code": REENGAGEMENT_REQUIRED,
    "title": "Re-engagement message",
    "message": "Re-engagement message",
    "error_data": {
        "details": "Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number."
    },
    "href": "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/",
}


class _Refused(Exception):
    """An API request the fake answers with an error (status and body as 360dialog would)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _graph(code: int, message: str, details: str | None = None, *, status: int = 400) -> _Refused:
    return _Refused(status, graph_error_body(code, message, details))


def _gateway(status: int, message: str) -> _Refused:
    return _Refused(status, gateway_error_body(status, message))


@dataclass(frozen=True)
class _Content:
    type: str
    text: str | None
    buttons: list[dict[str, str]] = field(default_factory=list)
    template: dict[str, Any] | None = None


def _check_product(body: dict[str, Any]) -> None:
    if body.get("messaging_product") != "whatsapp":
        raise _graph(INVALID_PARAMETER, "The parameter messaging_product is required.")


def _check_recipient(body: dict[str, Any]) -> str:
    to = body.get("to")
    if body.get("recipient_type", "individual") != "individual":
        raise _graph(INVALID_PARAMETER, "Invalid parameter", "recipient_type must be individual")
    if not isinstance(to, str) or not to.lstrip("+").isdigit():
        raise _graph(INVALID_PARAMETER, "The parameter to is required.")
    return to


def _check_message(
    body: dict[str, Any],
    templates: Mapping[str, TemplateDefinition],
    media: Mapping[str, StoredMedia],
) -> _Content:
    kind = body.get("type")
    content = body.get(kind) if isinstance(kind, str) else None
    if kind not in {"text", "interactive", "template", "document"}:
        raise _graph(INVALID_PARAMETER, "Invalid parameter", f"type {kind!r} is not simulated")
    if not isinstance(content, dict):
        raise _graph(MISSING_PARAMETER, "Required parameter is missing", f"{kind} object")
    if kind == "text":
        text = _string(content.get("body"), "text.body", TEXT_BODY_MAX)
        return _Content(type="text", text=text)
    if kind == "interactive":
        return _interactive(content, media)
    if kind == "template":
        return _template(content, templates)
    caption = content.get("caption")
    if caption is not None:
        _string(caption, "document.caption", CAPTION_MAX)
    _media_ref(content, media, "document")
    return _Content(type="document", text=caption)


def _string(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _graph(MISSING_PARAMETER, "Required parameter is missing", f"{what} is required")
    if len(value) > limit:
        raise _graph(INVALID_VALUE, "Parameter value is not valid", f"{what} too long ({limit})")
    return value


def _media_ref(content: dict[str, Any], media: Mapping[str, StoredMedia], what: str) -> None:
    media_id, link = content.get("id"), content.get("link")
    if isinstance(media_id, str) and media_id in media:
        return
    if media_id is None and isinstance(link, str) and link.startswith("https://"):
        return
    raise _graph(INVALID_VALUE, "Parameter value is not valid", f"{what}: unknown media id")


def _interactive(content: dict[str, Any], media: Mapping[str, StoredMedia]) -> _Content:
    if content.get("type") != "button":
        raise _graph(INVALID_PARAMETER, "Invalid parameter", "only reply buttons are simulated")
    body = content.get("body")
    text = _string(
        body.get("text") if isinstance(body, dict) else None, "body.text", INTERACTIVE_BODY_MAX
    )
    header, footer = content.get("header"), content.get("footer")
    if isinstance(header, dict) and header.get("type") == "text":
        _string(header.get("text"), "header.text", HEADER_FOOTER_MAX)
    elif isinstance(header, dict) and header.get("type") in {"document", "image", "video"}:
        kind = header["type"]
        reference = header.get(kind)
        _media_ref(reference if isinstance(reference, dict) else {}, media, kind)
    elif header is not None:
        raise _graph(INVALID_VALUE, "Parameter value is not valid", "header")
    if footer is not None:
        _string(
            footer.get("text") if isinstance(footer, dict) else None,
            "footer.text",
            HEADER_FOOTER_MAX,
        )
    action = content.get("action")
    buttons = _reply_buttons(action.get("buttons") if isinstance(action, dict) else None)
    return _Content(type="interactive", text=text, buttons=buttons)


def _reply_buttons(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= BUTTONS_MAX:
        raise _graph(INVALID_VALUE, "Parameter value is not valid", "Buttons count is invalid")
    buttons: list[dict[str, str]] = []
    for item in raw:
        reply = item.get("reply") if isinstance(item, dict) else None
        if not isinstance(reply, dict) or item.get("type") != "reply":
            raise _graph(INVALID_VALUE, "Parameter value is not valid", "button type")
        button_id = _string(reply.get("id"), "button id", BUTTON_ID_MAX)
        title = _string(reply.get("title"), "Button title length", BUTTON_TITLE_MAX)
        buttons.append({"id": button_id, "title": title})
    if len({b["id"] for b in buttons}) != len(buttons):
        raise _graph(INVALID_VALUE, "Parameter value is not valid", "button ids must be unique")
    if len({b["title"] for b in buttons}) != len(buttons):
        raise _graph(INVALID_VALUE, "Parameter value is not valid", "button titles must be unique")
    return buttons


def _template(content: dict[str, Any], templates: Mapping[str, TemplateDefinition]) -> _Content:
    name = content.get("name")
    language = content.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    definition = templates.get(name) if isinstance(name, str) else None
    if definition is None or definition.language != code:
        raise _graph(
            TEMPLATE_NOT_FOUND,
            "Template name does not exist in the translation",
            f"template name ({name}) does not exist in {code}",
        )
    params, payloads = _template_components(content.get("components", []), definition)
    if len(params) != definition.param_count:
        raise _graph(
            TEMPLATE_PARAM_MISMATCH,
            "Number of parameters does not match the expected number of params",
            f"body: number of localizable_params ({len(params)}) does not match the expected "
            f"number of params ({definition.param_count})",
        )
    buttons = [
        {"id": payloads.get(index, button.text), "title": button.text}
        for index, button in enumerate(definition.buttons)
    ]
    return _Content(
        type="template",
        text=definition.render(params),
        buttons=buttons,
        template={"name": definition.name, "params": params},
    )


def _template_components(
    components: Any, definition: TemplateDefinition
) -> tuple[list[str], dict[int, str]]:
    """(body parameters, quick-reply payload by button index) of a template send."""
    if not isinstance(components, list):
        raise _graph(INVALID_PARAMETER, "Invalid parameter", "components must be a list")
    params: list[str] = []
    payloads: dict[int, str] = {}
    for component in components:
        kind = component.get("type") if isinstance(component, dict) else None
        parameters = component.get("parameters", []) if isinstance(component, dict) else []
        if kind == "body" and isinstance(parameters, list):
            params.extend(_template_param(p) for p in parameters)
        elif kind == "button" and component.get("sub_type") == "quick_reply":
            index = component.get("index")
            position = int(index) if isinstance(index, str | int) and str(index).isdigit() else -1
            payload = (
                parameters[0].get("payload")
                if parameters and isinstance(parameters[0], dict)
                else None
            )
            if position not in definition.quick_reply_indexes or not isinstance(payload, str):
                raise _graph(INVALID_VALUE, "Parameter value is not valid", "button parameter")
            payloads[position] = payload
        else:
            raise _graph(
                TEMPLATE_PARAM_MISMATCH,
                "Number of parameters does not match the expected number of params",
                f"{kind}: the template has no parameters there",
            )
    return params, payloads


def _template_param(raw: Any) -> str:
    text = raw.get("text") if isinstance(raw, dict) and raw.get("type") == "text" else None
    if not isinstance(text, str) or not text.strip():
        raise _graph(MISSING_PARAMETER, "Required parameter is missing", "body text parameter")
    # Meta refuses newlines, tabs and runs of five spaces in a parameter (see client.py).
    if any(c in text for c in "\n\r\t") or "     " in text:
        raise _graph(
            INVALID_VALUE,
            "Parameter value is not valid",
            "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        )
    return text
