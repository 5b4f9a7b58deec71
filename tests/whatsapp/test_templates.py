"""Template definitions: the repo's JSON files load, validate and render."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from invoiceiq.whatsapp.templates import TemplateError, load_templates

CUSTOMER = {
    "invoice_new",
    "invoice_reminder",
    "payment_receipt",
    "payment_failed",
    "payment_unconfirmed",
    "invoice_paid_by_other",
}
MERCHANT = {
    "merchant_payment_received",
    "merchant_delivery_failed",
    "merchant_payment_review",
    "merchant_account_approved",
}
WITH_PAY_BUTTON = {"invoice_new", "invoice_reminder", "payment_failed", "payment_unconfirmed"}


def test_the_repo_defines_every_template_the_flows_need() -> None:
    templates = load_templates()

    assert set(templates) == CUSTOMER | MERCHANT
    for definition in templates.values():
        assert definition.category == "UTILITY"
        assert definition.language == "en"
        has_pay = [b.text for b in definition.buttons] == ["Pay with M-PESA"]
        assert has_pay == (definition.name in WITH_PAY_BUTTON), definition.name
    invoice = templates["invoice_new"]
    assert invoice.param_count == 5  # business, number, amount, description, link
    assert invoice.quick_reply_indexes == (0,)


@pytest.mark.parametrize("name", sorted(CUSTOMER | MERCHANT))
def test_each_template_renders_its_examples(name: str) -> None:
    definition = load_templates()[name]

    rendered = definition.render(definition.examples)

    assert len(definition.examples) == definition.param_count
    assert "{{" not in rendered
    for example in definition.examples:
        assert example in rendered
    # Meta refuses a body that starts or ends with a parameter, and parameters with newlines.
    assert not re.match(r"^\s*\{\{", definition.body)
    assert not re.search(r"\{\{\d+\}\}\s*$", definition.body)
    assert not any("\n" in e for e in definition.examples)


def test_render_needs_exactly_the_parameter_count() -> None:
    definition = load_templates()["merchant_payment_review"]

    with pytest.raises(TemplateError, match="takes 3 parameters, got 2"):
        definition.render(["a", "b"])
    with pytest.raises(TemplateError):
        definition.render("abc")  # a string is not a list of parameters


def test_a_parameter_that_looks_like_a_placeholder_stays_literal() -> None:
    definition = load_templates()["merchant_payment_review"]

    rendered = definition.render(["{{2}}", "INV1", "x"])

    assert "A payment of {{2}} for invoice INV1" in rendered


def _write(folder: Path, file_stem: str, **overrides: Any) -> None:
    definition: dict[str, Any] = {
        "name": file_stem,
        "category": "UTILITY",
        "language": "en",
        "body": "Hi {{1}}, invoice {{2}} is due.",
        "buttons": [],
    }
    definition.update(overrides)
    (folder / f"{file_stem}.json").write_text(json.dumps(definition), encoding="utf-8")


def test_a_valid_directory_loads(tmp_path: Path) -> None:
    _write(tmp_path, "due_notice", examples=["Jane", "INV1"])

    templates = load_templates(tmp_path)

    assert templates["due_notice"].render(["Jane", "INV1"]) == "Hi Jane, invoice INV1 is due."


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"body": "Hi {{1}}, invoice {{3}} is due."}, "without gaps"),
        ({"body": "Hi {{ 1 }}, due."}, "malformed"),
        ({"body": "Hi {{name}}, due."}, "malformed"),
        ({"body": "x" * 1025}, "at most 1024"),
        ({"category": "PROMOTIONAL"}, "category"),
        ({"language": "English"}, "language"),
        ({"name": "Due-Notice"}, "lowercase"),
        ({"examples": ["only one"]}, "examples: 1 given for 2"),
        ({"buttons": [{"type": "QUICK_REPLY", "text": "x" * 26}]}, "at most 25"),
        ({"buttons": [{"type": "URL", "text": "Open"}]}, "QUICK_REPLY"),
        ({"footer": "unknown key"}, "unknown keys"),
        ({"body": ""}, "non-empty"),
    ],
)
def test_invalid_definitions_are_refused(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    _write(tmp_path, overrides.get("name", "due_notice"), **overrides)

    with pytest.raises(TemplateError, match=re.escape(message)):
        load_templates(tmp_path)


def test_the_file_name_must_match_the_template_name(tmp_path: Path) -> None:
    _write(tmp_path, "due_notice", name="other_name")

    with pytest.raises(TemplateError, match=r"file name must be other_name\.json"):
        load_templates(tmp_path)


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no template definitions"):
        load_templates(tmp_path)
