"""Webhook parsing against the contract samples in tests/contracts/whatsapp."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from invoiceiq.whatsapp.schemas import (
    InboundMessage,
    StatusUpdate,
    WebhookEnvelope,
    envelope_from_document,
    envelope_from_json,
    inbound_events,
    system_errors,
)

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts" / "whatsapp"

# Per webhook sample: (kind, sender, user_id, button_id) of each message, (status, error) of
# each status, in order.
EXPECTED: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {
    "message_text.json": ([("text", "254712345678", None, None)], []),
    "message_interactive_button_reply.json": (
        [("button", "254712345678", None, "pay:INV7K3QX9A")],
        [],
    ),
    "message_interactive_list_reply.json": (
        [("button", "254712345678", None, "invoice:INV7K3QX9A")],
        [],
    ),
    "message_template_button.json": ([("button", "254712345678", None, "pay:INV7K3QX9A")], []),
    "message_image.json": ([("unsupported", "254712345678", None, None)], []),
    "message_reaction.json": ([("event", "254712345678", None, None)], []),
    "message_unsupported.json": ([("unsupported", "254712345678", None, None)], []),
    "message_location.json": ([("unsupported", "254712345678", None, None)], []),
    "message_system.json": ([("event", "254712345678", None, None)], []),
    "message_future_type.json": ([("unsupported", "254712345678", None, None)], []),
    "message_user_id_only.json": ([("text", None, "KE.13491208655302741918", None)], []),
    "batch_multi_entry.json": (
        [
            ("text", "254712345678", None, None),
            ("text", "254110123456", None, None),
            ("button", "254722000111", None, "pay:INV2M8Q4ZR"),
            ("unsupported", "254722000111", None, None),
        ],
        [],
    ),
    "status_sent.json": ([], [("sent", None)]),
    "status_delivered.json": ([], [("delivered", None)]),
    "status_read.json": ([], [("read", None)]),
    "status_failed_131047.json": ([], [("failed", 131047)]),
    "batch_mixed.json": (
        [("text", "254712345678", None, None), ("unsupported", "254712345678", None, None)],
        [("delivered", None), ("read", None), ("failed", 131026)],
    ),
}
ERROR_SAMPLES = {"error_graph.json", "error_gateway.json", "error_string.json"}


def load_sample(name: str) -> dict[str, Any]:
    """A contract sample without its `_source` note (which every sample must have)."""
    document: dict[str, Any] = json.loads((CONTRACTS / name).read_text(encoding="utf-8"))
    source = document.pop("_source")
    assert isinstance(source, str) and source.startswith("https://"), name
    return document


def events(document: dict[str, Any]) -> tuple[list[InboundMessage], list[StatusUpdate]]:
    envelope = envelope_from_document(document)
    assert envelope is not None
    return inbound_events(envelope)


def test_every_sample_has_an_expectation() -> None:
    on_disk = {path.name for path in CONTRACTS.glob("*.json")}

    assert on_disk == set(EXPECTED) | ERROR_SAMPLES


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_webhook_sample_parses(name: str) -> None:
    messages, statuses = events(load_sample(name))

    expected_messages, expected_statuses = EXPECTED[name]
    assert [(m.kind, m.sender, m.user_id, m.button_id) for m in messages] == expected_messages
    assert [(s.status, s.error_code) for s in statuses] == expected_statuses
    for moment in [m.timestamp for m in messages] + [s.timestamp for s in statuses]:
        assert moment.tzinfo is UTC


def test_a_text_message_is_flattened_with_its_contact() -> None:
    (message,), _ = events(load_sample("message_text.json"))

    assert message.wamid.startswith("wamid.")
    assert message.text == "invoice 0712345678 1500 Logo design"
    assert message.contact_name == "Jane Wanjiru"
    assert message.timestamp == datetime(2025, 11, 26, 12, 0, tzinfo=UTC)


def test_both_button_shapes_give_the_same_event() -> None:
    (reply,), _ = events(load_sample("message_interactive_button_reply.json"))
    (template,), _ = events(load_sample("message_template_button.json"))

    assert (reply.kind, reply.button_id, reply.text) == (
        template.kind,
        template.button_id,
        template.text,
    )
    assert (reply.raw_type, template.raw_type) == ("interactive", "button")


def test_a_failed_status_carries_its_error() -> None:
    _, (status,) = events(load_sample("status_failed_131047.json"))

    assert status.status == "failed"
    assert (status.error_code, status.error_title) == (131047, "Re-engagement message")
    assert status.recipient == "254712345678"


def test_the_mixed_batch_keeps_system_errors_apart_and_skips_other_fields() -> None:
    envelope = WebhookEnvelope.model_validate(load_sample("batch_mixed.json"))

    assert [e.code for e in system_errors(envelope)] == [131000]


def test_a_user_id_only_sender_keeps_its_name() -> None:
    (message,), _ = events(load_sample("message_user_id_only.json"))

    assert message.sender is None
    assert message.contact_name == "kamau.designs"


# Both ways in: a document (as tests and tools hold it) and the webhook's raw bytes, which try a
# strict parse first and fall back to reading item by item.
READERS = pytest.mark.parametrize(
    "read",
    [envelope_from_document, lambda document: envelope_from_json(json.dumps(document).encode())],
    ids=["document", "bytes"],
)


def read_events(
    read: Callable[[Any], WebhookEnvelope | None], document: dict[str, Any]
) -> tuple[list[InboundMessage], list[StatusUpdate]]:
    envelope = read(document)
    assert envelope is not None
    return inbound_events(envelope)


@READERS
def test_a_message_whose_content_does_not_parse_keeps_its_place_in_the_batch(
    read: Callable[[Any], WebhookEnvelope | None],
) -> None:
    document = load_sample("message_text.json")
    value = document["entry"][0]["changes"][0]["value"]
    good = value["messages"][0]
    broken = {**good, "id": "wamid.broken", "type": "interactive", "interactive": [1, 2]}
    no_id = {"type": "text", "text": {"body": "who am I"}}
    value["messages"] = [broken, no_id, good]

    messages, _ = read_events(read, document)

    assert [(m.wamid, m.kind) for m in messages] == [
        ("wamid.broken", "unsupported"),
        (good["id"], "text"),
    ]


@READERS
def test_a_status_without_a_timestamp_is_dropped_not_the_batch(
    read: Callable[[Any], WebhookEnvelope | None],
) -> None:
    document = load_sample("batch_mixed.json")
    statuses = document["entry"][0]["changes"][0]["value"]["statuses"]
    del statuses[0]["timestamp"]

    _, parsed = read_events(read, document)

    assert [s.status for s in parsed] == ["read", "failed"]


@READERS
@pytest.mark.parametrize(
    "spoil",
    [
        lambda doc: doc["entry"].append({"id": "x", "changes": [{"value": None}]}),
        lambda doc: doc["entry"][0]["changes"].append({"field": "messages", "value": None}),
        lambda doc: doc["entry"][0].update(id=102290129340398),
        lambda doc: doc["entry"][0]["changes"][0]["value"]["contacts"].append({"wa_id": []}),
        lambda doc: doc["entry"][0]["changes"][0]["value"]["metadata"].update(
            phone_number_id=106540352242922
        ),
        lambda doc: doc["entry"][0]["changes"][0]["value"].update(messaging_product=1),
        lambda doc: doc["entry"][0]["changes"][0]["value"].update(errors=[{"code": "odd"}]),
        lambda doc: doc["entry"].append("not an entry"),
    ],
)
def test_an_odd_part_of_the_envelope_is_left_out_not_the_messages_in_it(
    read: Callable[[Any], WebhookEnvelope | None], spoil: Callable[[dict[str, Any]], None]
) -> None:
    """The webhook is answered 200 whatever happens (360dialog would not send it again): one
    part that does not parse must not take the merchant's message with it."""
    document = load_sample("message_text.json")
    good = document["entry"][0]["changes"][0]["value"]["messages"][0]
    spoil(document)

    messages, _ = read_events(read, document)

    assert [(m.wamid, m.kind, m.text) for m in messages] == [
        (good["id"], "text", good["text"]["body"])
    ]


def test_a_numeric_wa_id_keeps_the_senders_name() -> None:
    document = load_sample("message_text.json")
    [contact] = document["entry"][0]["changes"][0]["value"]["contacts"]
    contact["wa_id"] = int(contact["wa_id"])
    [message], _ = events(document)
    assert message.contact_name == contact["profile"]["name"]
    assert message.sender == str(contact["wa_id"])


def test_a_non_digit_from_is_taken_as_a_user_id() -> None:
    document = load_sample("message_text.json")
    document["entry"][0]["changes"][0]["value"]["contacts"] = []
    document["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = "KE.998877"

    (message,), _ = events(document)

    assert (message.sender, message.user_id) == (None, "KE.998877")


def test_a_template_quick_reply_without_payload_reads_as_text() -> None:
    document = load_sample("message_template_button.json")
    document["entry"][0]["changes"][0]["value"]["messages"][0]["button"] = {"text": "Yes"}

    (message,), _ = events(document)

    assert (message.kind, message.text, message.button_id) == ("text", "Yes", None)


def test_an_empty_or_foreign_envelope_has_no_events() -> None:
    assert events({}) == ([], [])
    assert events({"object": "page", "entry": [{"id": "1", "changes": []}]}) == ([], [])
