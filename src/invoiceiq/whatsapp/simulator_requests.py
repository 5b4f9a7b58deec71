"""How the fake 360dialog API checks a request and refuses it, as the Cloud API would.

The payload rules (reply buttons, documents, template names and parameter counts from the repo's
definitions), the configured faults, and the two error shapes: Graph errors for what Meta refuses,
gateway errors for what 360dialog answers itself (a bad API key, its webhook configuration, an
upstream timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from invoiceiq.simulator.config import SimulatorSettings
from invoiceiq.whatsapp.client import (
    BUTTON_ID_MAX,
    BUTTON_TITLE_MAX,
    BUTTONS_MAX,
    CAPTION_MAX,
    HEADER_FOOTER_MAX,
    INTERACTIVE_BODY_MAX,
    TEXT_BODY_MAX,
)
from invoiceiq.whatsapp.errors import gateway_error_body, graph_error_body
from invoiceiq.whatsapp.templates import TemplateDefinition

# Codes: 100 invalid parameter (Graph), 131008 required parameter missing, 131009 parameter value
# not valid, 132000 template parameter count mismatch, 132001 template missing in that language.
# https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
INVALID_PARAMETER = 100
MISSING_PARAMETER = 131008
INVALID_VALUE = 131009
TEMPLATE_PARAM_MISMATCH = 132000
TEMPLATE_NOT_FOUND = 132001


class Refused(Exception):
    """An API request the fake answers with an error (status and body as 360dialog would)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def graph_refusal(
    code: int, message: str, details: str | None = None, *, status: int = 400
) -> Refused:
    return Refused(status, graph_error_body(code, message, details))


def gateway_refusal(status: int, message: str) -> Refused:
    return Refused(status, gateway_error_body(status, message))


@dataclass(frozen=True)
class Content:
    """What a valid send puts in the phone's inbox."""

    type: str
    text: str | None
    buttons: list[dict[str, str]] = field(default_factory=list)
    template: dict[str, Any] | None = None


async def play_faults(settings: SimulatorSettings) -> bool:
    """Plays the configured faults; returns whether the answer must be held afterwards.

    All dice are rolled before the first await, so the order of rolls is the order in
    which requests arrived.
    """
    faults, dice = settings.config.faults.whatsapp, settings.dice
    if dice.roll(faults.error_429):
        raise graph_refusal(130429, "Rate limit hit", "throughput reached", status=429)
    if dice.roll(faults.error_5xx):
        raise graph_refusal(131000, "Something went wrong", status=500)
    if dice.roll(faults.timeout_before):
        # Lost on the way in: nothing is recorded, and the answer comes too late.
        await asyncio.sleep(settings.config.timeout_hold_s)
        raise gateway_refusal(504, "Gateway timeout")
    return dice.roll(faults.timeout_after)


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise graph_refusal(100, "Invalid parameter", "the body is not JSON") from error
    if not isinstance(body, dict):
        raise graph_refusal(100, "Invalid parameter", "the body must be a JSON object")
    return body


def check_product(body: dict[str, Any]) -> None:
    if body.get("messaging_product") != "whatsapp":
        raise graph_refusal(INVALID_PARAMETER, "The parameter messaging_product is required.")


def check_recipient(body: dict[str, Any]) -> str:
    to = body.get("to")
    if body.get("recipient_type", "individual") != "individual":
        raise graph_refusal(
            INVALID_PARAMETER, "Invalid parameter", "recipient_type must be individual"
        )
    if not isinstance(to, str) or not to.lstrip("+").isdigit():
        raise graph_refusal(INVALID_PARAMETER, "The parameter to is required.")
    return to


def check_message(
    body: dict[str, Any],
    templates: Mapping[str, TemplateDefinition],
    media_ids: Container[str],
) -> Content:
    """The message of a send, checked; `media_ids` are the uploads a send may refer to."""
    kind = body.get("type")
    content = body.get(kind) if isinstance(kind, str) else None
    if kind not in {"text", "interactive", "template", "document"}:
        raise graph_refusal(
            INVALID_PARAMETER, "Invalid parameter", f"type {kind!r} is not simulated"
        )
    if not isinstance(content, dict):
        raise graph_refusal(MISSING_PARAMETER, "Required parameter is missing", f"{kind} object")
    if kind == "text":
        text = _string(content.get("body"), "text.body", TEXT_BODY_MAX)
        return Content(type="text", text=text)
    if kind == "interactive":
        return _interactive(content, media_ids)
    if kind == "template":
        return _template(content, templates)
    caption = content.get("caption")
    if caption is not None:
        _string(caption, "document.caption", CAPTION_MAX)
    _media_ref(content, media_ids, "document")
    return Content(type="document", text=caption)


def _string(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise graph_refusal(
            MISSING_PARAMETER, "Required parameter is missing", f"{what} is required"
        )
    if len(value) > limit:
        raise graph_refusal(
            INVALID_VALUE, "Parameter value is not valid", f"{what} too long ({limit})"
        )
    return value


def _media_ref(content: dict[str, Any], media_ids: Container[str], what: str) -> None:
    media_id, link = content.get("id"), content.get("link")
    if isinstance(media_id, str) and media_id in media_ids:
        return
    if media_id is None and isinstance(link, str) and link.startswith("https://"):
        return
    raise graph_refusal(INVALID_VALUE, "Parameter value is not valid", f"{what}: unknown media id")


def _interactive(content: dict[str, Any], media_ids: Container[str]) -> Content:
    if content.get("type") != "button":
        raise graph_refusal(
            INVALID_PARAMETER, "Invalid parameter", "only reply buttons are simulated"
        )
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
        _media_ref(reference if isinstance(reference, dict) else {}, media_ids, kind)
    elif header is not None:
        raise graph_refusal(INVALID_VALUE, "Parameter value is not valid", "header")
    if footer is not None:
        _string(
            footer.get("text") if isinstance(footer, dict) else None,
            "footer.text",
            HEADER_FOOTER_MAX,
        )
    action = content.get("action")
    buttons = _reply_buttons(action.get("buttons") if isinstance(action, dict) else None)
    return Content(type="interactive", text=text, buttons=buttons)


def _reply_buttons(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= BUTTONS_MAX:
        raise graph_refusal(
            INVALID_VALUE, "Parameter value is not valid", "Buttons count is invalid"
        )
    buttons: list[dict[str, str]] = []
    for item in raw:
        reply = item.get("reply") if isinstance(item, dict) else None
        if not isinstance(reply, dict) or item.get("type") != "reply":
            raise graph_refusal(INVALID_VALUE, "Parameter value is not valid", "button type")
        button_id = _string(reply.get("id"), "button id", BUTTON_ID_MAX)
        title = _string(reply.get("title"), "Button title length", BUTTON_TITLE_MAX)
        buttons.append({"id": button_id, "title": title})
    if len({b["id"] for b in buttons}) != len(buttons):
        raise graph_refusal(
            INVALID_VALUE, "Parameter value is not valid", "button ids must be unique"
        )
    if len({b["title"] for b in buttons}) != len(buttons):
        raise graph_refusal(
            INVALID_VALUE, "Parameter value is not valid", "button titles must be unique"
        )
    return buttons


def _template(content: dict[str, Any], templates: Mapping[str, TemplateDefinition]) -> Content:
    name = content.get("name")
    language = content.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    definition = templates.get(name) if isinstance(name, str) else None
    if definition is None or definition.language != code:
        raise graph_refusal(
            TEMPLATE_NOT_FOUND,
            "Template name does not exist in the translation",
            f"template name ({name}) does not exist in {code}",
        )
    params, payloads = _template_components(content.get("components", []), definition)
    if len(params) != definition.param_count:
        raise graph_refusal(
            TEMPLATE_PARAM_MISMATCH,
            "Number of parameters does not match the expected number of params",
            f"body: number of localizable_params ({len(params)}) does not match the expected "
            f"number of params ({definition.param_count})",
        )
    buttons = [
        {"id": payloads.get(index, button.text), "title": button.text}
        for index, button in enumerate(definition.buttons)
    ]
    return Content(
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
        raise graph_refusal(INVALID_PARAMETER, "Invalid parameter", "components must be a list")
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
                raise graph_refusal(
                    INVALID_VALUE, "Parameter value is not valid", "button parameter"
                )
            payloads[position] = payload
        else:
            raise graph_refusal(
                TEMPLATE_PARAM_MISMATCH,
                "Number of parameters does not match the expected number of params",
                f"{kind}: the template has no parameters there",
            )
    return params, payloads


def _template_param(raw: Any) -> str:
    text = raw.get("text") if isinstance(raw, dict) and raw.get("type") == "text" else None
    if not isinstance(text, str) or not text.strip():
        raise graph_refusal(
            MISSING_PARAMETER, "Required parameter is missing", "body text parameter"
        )
    # Meta refuses newlines, tabs and runs of five spaces in a parameter (see client.py).
    if any(c in text for c in "\n\r\t") or "     " in text:
        raise graph_refusal(
            INVALID_VALUE,
            "Parameter value is not valid",
            "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        )
    return text
