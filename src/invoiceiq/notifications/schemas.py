"""What a notification is, independent of how WhatsApp carries it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TemplateCall:
    """An approved template: used when the recipient's 24-hour window is closed."""

    name: str
    params: tuple[str, ...]
    button_payloads: tuple[str, ...] = ()
    language: str = "en"


@dataclass(frozen=True)
class Outbound:
    """One message to one person: the free-form form, and the template to use outside the window.

    `kind` names what it is (invoice, confirmation, receipt, ...): it is logged, and a delivery
    failure of an `invoice` is told to the merchant.
    """

    kind: str
    text: str
    buttons: tuple[tuple[str, str], ...] = ()
    template: TemplateCall | None = None
    footer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outbound:
        template = data.get("template")
        return cls(
            kind=data["kind"],
            text=data["text"],
            buttons=tuple((str(b[0]), str(b[1])) for b in data.get("buttons", ())),
            template=(
                TemplateCall(
                    name=template["name"],
                    params=tuple(template["params"]),
                    button_payloads=tuple(template.get("button_payloads", ())),
                    language=template.get("language", "en"),
                )
                if template
                else None
            ),
            footer=data.get("footer"),
            extra=dict(data.get("extra", {})),
        )
