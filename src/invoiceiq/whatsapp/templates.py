"""WhatsApp message templates: the repo's JSON definitions, loaded, validated and rendered.

`src/invoiceiq/templates/*.json` is the one source for the app (which template to send and with
how many parameters), the simulator (what it accepts and how the phone shows it) and the operator
(what to submit to Meta for approval). One file per template, named after it:

    {"name": "invoice_new", "category": "UTILITY", "language": "en",
     "body": "… {{1}} … {{2}} …", "examples": ["…", "…"],
     "buttons": [{"type": "QUICK_REPLY", "text": "Pay with M-PESA"}]}

Body parameters are positional, `{{1}}` … `{{n}}` without gaps; `examples` (one per parameter) are
what Meta asks for when a template is submitted.
https://docs.360dialog.com/docs/waba-basics/templates/template-elements
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "templates"

TemplateCategory = Literal["UTILITY", "MARKETING", "AUTHENTICATION"]
ButtonType = Literal["QUICK_REPLY"]

_CATEGORIES: frozenset[str] = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
# Meta's template names: lowercase letters, digits and underscores.
_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
# Language codes as Meta lists them: `en`, `en_US`, `sw`.
_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
# Template limits: body 1,024 characters; quick-reply button text 25; at most 10 buttons.
# https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/components
BODY_MAX = 1024
BUTTON_TEXT_MAX = 25
BUTTONS_MAX = 10


class TemplateError(ValueError):
    """A template definition breaks the rules, or was rendered with the wrong parameters."""


@dataclass(frozen=True)
class TemplateButton:
    type: ButtonType
    text: str


@dataclass(frozen=True)
class TemplateDefinition:
    name: str
    category: TemplateCategory
    language: str
    body: str
    buttons: tuple[TemplateButton, ...] = ()
    examples: tuple[str, ...] = ()

    @property
    def param_count(self) -> int:
        return len(set(_PLACEHOLDER.findall(self.body)))

    @property
    def quick_reply_indexes(self) -> tuple[int, ...]:
        """Indexes (as the send request counts them) of the quick-reply buttons."""
        return tuple(i for i, button in enumerate(self.buttons) if button.type == "QUICK_REPLY")

    def render(self, params: Sequence[str]) -> str:
        """The body as the recipient sees it, with `params[i-1]` in place of `{{i}}`."""
        if isinstance(params, str) or len(params) != self.param_count:
            raise TemplateError(
                f"template {self.name} takes {self.param_count} parameters, got "
                f"{1 if isinstance(params, str) else len(params)}"
            )
        # One pass with a function, so a parameter that itself contains "{{2}}" stays literal.
        return _PLACEHOLDER.sub(lambda m: params[int(m.group(1)) - 1], self.body)


def load_templates(directory: Path | None = None) -> dict[str, TemplateDefinition]:
    """Every `*.json` definition in `directory` (default: the package's), validated, by name."""
    folder = directory or DEFAULT_DIRECTORY
    templates: dict[str, TemplateDefinition] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            definition = parse_definition(raw)
        except (TemplateError, json.JSONDecodeError) as error:
            raise TemplateError(f"{path.name}: {error}") from error
        if path.stem != definition.name:
            raise TemplateError(f"{path.name}: file name must be {definition.name}.json")
        if definition.name in templates:  # pragma: no cover - file names are unique already
            raise TemplateError(f"{path.name}: duplicate template {definition.name}")
        templates[definition.name] = definition
    if not templates:
        raise TemplateError(f"no template definitions in {folder}")
    return templates


def parse_definition(raw: Any) -> TemplateDefinition:
    """One definition from its JSON object; raises TemplateError saying what is wrong."""
    if not isinstance(raw, dict):
        raise TemplateError("a definition is a JSON object")
    allowed = {"name", "category", "language", "body", "buttons", "examples"}
    unknown = set(raw) - allowed
    if unknown:
        raise TemplateError(f"unknown keys {sorted(unknown)}")
    name = _text(raw, "name")
    if not _NAME.match(name):
        raise TemplateError("name: lowercase letters, digits and underscores only")
    category = _text(raw, "category")
    if category not in _CATEGORIES:
        raise TemplateError(f"category must be one of {sorted(_CATEGORIES)}")
    language = _text(raw, "language")
    if not _LANGUAGE.match(language):
        raise TemplateError("language: a code such as en or en_US")
    body = _text(raw, "body")
    _check_body(body)
    definition = TemplateDefinition(
        name=name,
        category=category,  # type: ignore[arg-type]  # checked against _CATEGORIES above
        language=language,
        body=body,
        buttons=_buttons(raw.get("buttons", [])),
        examples=_examples(raw.get("examples", [])),
    )
    if definition.examples and len(definition.examples) != definition.param_count:
        raise TemplateError(
            f"examples: {len(definition.examples)} given for {definition.param_count} parameters"
        )
    return definition


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(f"{key}: a non-empty string is required")
    return value


def _check_body(body: str) -> None:
    if len(body) > BODY_MAX:
        raise TemplateError(f"body: at most {BODY_MAX} characters")
    numbers = {int(n) for n in _PLACEHOLDER.findall(body)}
    if numbers != set(range(1, len(numbers) + 1)):
        raise TemplateError(f"body: parameters must be numbered 1..n without gaps, got {numbers}")
    leftover = _PLACEHOLDER.sub("", body)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError("body: malformed parameter (use {{1}}, {{2}}, …)")


def _buttons(raw: Any) -> tuple[TemplateButton, ...]:
    if not isinstance(raw, list) or len(raw) > BUTTONS_MAX:
        raise TemplateError(f"buttons: a list of at most {BUTTONS_MAX}")
    buttons: list[TemplateButton] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type") != "QUICK_REPLY":
            # Only quick replies are used: their tap comes back as a webhook with our payload.
            raise TemplateError('buttons: each is {"type": "QUICK_REPLY", "text": …}')
        text = _text(item, "text")
        if len(text) > BUTTON_TEXT_MAX:
            raise TemplateError(f"buttons: text at most {BUTTON_TEXT_MAX} characters")
        buttons.append(TemplateButton(type="QUICK_REPLY", text=text))
    return tuple(buttons)


def _examples(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(e, str) and e for e in raw):
        raise TemplateError("examples: a list of non-empty strings")
    return tuple(raw)
