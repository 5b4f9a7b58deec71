"""Daraja wire parsing against the contract samples: callbacks, answers and every error shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from invoiceiq.mpesa.errors import DarajaError, classify_response
from invoiceiq.mpesa.schemas import (
    CallbackError,
    StkPushResponse,
    StkQueryResponse,
    TokenResponse,
    daraja_time,
    parse_callback,
    whole_shillings,
)

CONTRACTS = Path(__file__).parents[1] / "contracts" / "mpesa"


def contract(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONTRACTS / name).read_text())
    assert data.pop("_source"), f"{name} must name its source"
    return data


def names(prefix: str) -> list[str]:
    return sorted(path.name for path in CONTRACTS.glob(f"{prefix}*.json"))


def raw_body(sample: dict[str, Any]) -> bytes:
    body = sample["body"]
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def test_every_contract_file_names_its_source() -> None:
    files = list(CONTRACTS.glob("*.json"))
    assert len(files) >= 25
    for path in files:
        source = json.loads(path.read_text()).get("_source", "")
        assert source.startswith(("https://", "reference/")), path.name


# Callbacks


SUCCESSES = {
    # file: (amount, receipt, phone, Nairobi wall time of TransactionDate)
    "callback_success.json": (1500, "TCE4XK7Q2M", "254712345678", "20250314101552"),
    "callback_success_no_balance.json": (1, "NLJ7RT61SV", "254708374149", "20191219102115"),
    "callback_success_amount_decimal.json": (1, "UAB1C2D3E4", "254112345678", "20250101000001"),
    "callback_success_amount_string.json": (1, "LGR7OWQX0R", "254721566839", "20170727154800"),
}


@pytest.mark.parametrize("name", sorted(SUCCESSES))
def test_success_callbacks_parse(name: str) -> None:
    amount, receipt, phone, local_time = SUCCESSES[name]
    callback = parse_callback(contract(name))
    assert callback.succeeded and callback.result_code == "0"
    assert callback.amount == amount and isinstance(callback.amount, int)
    assert callback.receipt_number == receipt
    assert callback.phone == phone
    assert callback.transaction_date is not None
    assert callback.transaction_date.tzinfo is not None
    # Nairobi is UTC+3 all year (no daylight saving).
    wall = datetime.strptime(local_time, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    assert callback.transaction_date == wall - timedelta(hours=3)
    assert callback.checkout_request_id.startswith("ws_CO_")
    assert callback.merchant_request_id


FAILURES = {
    "callback_failed_1032.json": "1032",
    "callback_failed_1032_old_wording.json": "1032",
    "callback_failed_1037.json": "1037",
    "callback_failed_1.json": "1",
    "callback_failed_2001.json": "2001",
    "callback_failed_17.json": "17",
    "callback_failed_string_code.json": "SFC_IC0003",
}


def test_all_callback_samples_are_covered() -> None:
    assert set(names("callback_")) == set(SUCCESSES) | set(FAILURES)


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_failure_callbacks_parse_without_metadata(name: str) -> None:
    callback = parse_callback(contract(name))
    assert callback.result_code == FAILURES[name]
    assert not callback.succeeded
    assert callback.result_desc
    assert (callback.amount, callback.receipt_number, callback.transaction_date) == (None,) * 3
    assert callback.phone is None


def _success_with(**items: Any) -> dict[str, Any]:
    body = contract("callback_success.json")
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = [
        {"Name": name, "Value": value} for name, value in items.items()
    ]
    return body


@pytest.mark.parametrize("amount", [1.5, "1.01", "abc", True, -1, "NaN", [1]])
def test_an_amount_that_is_not_whole_shillings_is_refused(amount: Any) -> None:
    with pytest.raises(CallbackError, match="Amount"):
        parse_callback(_success_with(Amount=amount, MpesaReceiptNumber="TCE4XK7Q2M"))


@pytest.mark.parametrize("value", [1, 1.0, "1.00", " 1 ", 150000.00])
def test_whole_amounts_in_every_documented_form(value: Any) -> None:
    assert whole_shillings(value) in (1, 150000)


def test_a_success_without_amount_or_receipt_is_returned_with_none() -> None:
    # The caller must not mark anything paid on it (the amount cannot match an attempt).
    callback = parse_callback(_success_with(Balance=None))
    assert callback.succeeded
    assert callback.amount is None and callback.receipt_number is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: body.pop("Body"),
        lambda body: body["Body"].pop("stkCallback"),
        lambda body: body["Body"]["stkCallback"].pop("CheckoutRequestID"),
        lambda body: body["Body"]["stkCallback"].pop("ResultCode"),
        lambda body: body["Body"]["stkCallback"].update(ResultCode=None),
        lambda body: body["Body"]["stkCallback"].update(ResultCode=""),
        lambda body: body["Body"]["stkCallback"].update(CallbackMetadata={"Item": "x"}),
    ],
)
def test_a_body_that_is_not_a_callback_is_refused(mutate: Any) -> None:
    body = contract("callback_success.json")
    mutate(body)
    with pytest.raises(CallbackError):
        parse_callback(body)


@pytest.mark.parametrize("value", ["2025031410155", 2025131410155200, "yesterday", True, "²" * 14])
def test_a_transaction_date_or_phone_that_cannot_be_read_is_left_out_not_the_callback(
    value: Any,
) -> None:
    """Neither decides money; refusing the callback for them would lose its receipt (Daraja
    sends a callback once)."""
    callback = parse_callback(
        _success_with(
            TransactionDate=value, Amount=1, MpesaReceiptNumber="TCE4XK7Q2M", PhoneNumber=""
        )
    )
    assert callback.succeeded and callback.amount == 1
    assert callback.receipt_number == "TCE4XK7Q2M"
    assert callback.transaction_date is None and callback.phone is None


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (
            lambda cb: cb.update(ResultDesc=None),
            lambda c: c.result_desc == "" and c.succeeded,
        ),
        (
            lambda cb: cb.update(MerchantRequestID=None),
            lambda c: c.merchant_request_id is None and c.succeeded,
        ),
        (
            lambda cb: cb.pop("MerchantRequestID"),
            lambda c: c.merchant_request_id is None and c.succeeded,
        ),
        (
            lambda cb: cb.update(ResultCode=0.0),
            lambda c: c.result_code == "0" and c.succeeded,
        ),
        (
            lambda cb: cb.update(ResultCode=1032.0),
            lambda c: c.result_code == "1032" and not c.succeeded,
        ),
        (
            lambda cb: cb["CallbackMetadata"].update(Item={"Name": "Amount", "Value": 1500}),
            lambda c: c.amount == 1500 and c.receipt_number is None,
        ),
    ],
)
def test_callback_shapes_seen_besides_the_documented_one_are_read(mutate: Any, check: Any) -> None:
    body = contract("callback_success.json")
    mutate(body["Body"]["stkCallback"])
    assert check(parse_callback(body))


def test_daraja_time_is_nairobi_wall_time() -> None:
    assert daraja_time(20250314101552) == datetime(2025, 3, 14, 7, 15, 52, tzinfo=UTC)
    assert daraja_time("20250101000001") == datetime(2024, 12, 31, 21, 0, 1, tzinfo=UTC)


def test_repeated_and_unknown_items_are_tolerated() -> None:
    body = contract("callback_success.json")
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    items.append({"Name": "Amount", "Value": 99})
    items.append({"Name": "NewThing", "Value": {"nested": True}})
    assert parse_callback(body).amount == 1500


# Answers


def test_token_answers_take_expires_in_as_number_or_string() -> None:
    for name in ("response_token.json", "response_token_string_expiry.json"):
        answer = TokenResponse.model_validate(contract(name)["body"])
        assert answer.expires_in == 3599 and answer.access_token


def test_push_accepted_answer() -> None:
    answer = StkPushResponse.model_validate(contract("response_stk_push_accepted.json")["body"])
    assert answer.response_code == "0"
    assert answer.checkout_request_id == "ws_CO_1007202409152617172396192"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("response_stk_query_success.json", "0"),
        ("response_stk_query_failed.json", "1032"),
        ("response_stk_query_failed_1037.json", "1037"),
    ],
)
def test_query_answers(name: str, code: str) -> None:
    answer = StkQueryResponse.model_validate(contract(name)["body"])
    assert answer.result_code == code


def test_query_result_code_as_a_number_is_read_as_text() -> None:
    body = contract("response_stk_query_failed.json")["body"] | {"ResultCode": 1032}
    assert StkQueryResponse.model_validate(body).result_code == "1032"


# Errors: classified by errorCode and message, never by the HTTP status alone.

ERRORS: dict[str, dict[str, Any]] = {
    "error_being_processed.json": {"kind": "busy", "pending": True, "error_code": "500.001.1001"},
    "response_stk_query_pending.json": {"kind": "busy", "pending": True},
    "error_empty.json": {"kind": "rejected", "error_code": None},
    "error_html.json": {"kind": "transient", "error_code": None},
    "error_internal.json": {"kind": "transient", "error_code": "500.003.1001"},
    "error_invalid_access_token.json": {"kind": "rejected", "token_refused": True},
    "error_invalid_grant.json": {"kind": "rejected", "error_code": "400.008.02"},
    "error_invalid_phone.json": {"kind": "rejected", "invalid_field": "PhoneNumber"},
    "error_invalid_remarks.json": {"kind": "rejected", "invalid_field": "Remarks"},
    "error_merchant_does_not_exist.json": {"kind": "rejected", "pending": False},
    "error_spike_arrest_apigee.json": {"kind": "transient", "http_status": 429},
    "error_spike_arrest_daraja.json": {"kind": "transient", "error_code": "500.003.02"},
    "error_unable_to_lock.json": {"kind": "busy", "pending": False},
    "error_wrong_credentials.json": {"kind": "rejected", "error_code": "500.001.1001"},
}


def test_all_error_samples_are_covered() -> None:
    assert set(names("error_")) <= set(ERRORS)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_bodies_are_classified(name: str) -> None:
    sample = contract(name)
    error = classify_response(sample["http_status"], raw_body(sample))
    assert isinstance(error, DarajaError)
    for attribute, expected in ERRORS[name].items():
        assert getattr(error, attribute) == expected, attribute
    # People never see the provider's words; logs keep them.
    body = sample["body"]
    if isinstance(body, dict) and "errorMessage" in body:
        assert error.provider_message == body["errorMessage"]
        assert body["errorMessage"] not in error.message


def test_the_three_meanings_of_500_001_1001_are_told_apart() -> None:
    kinds = {
        name: classify_response(500, raw_body(contract(name))).kind
        for name in (
            "error_wrong_credentials.json",
            "error_unable_to_lock.json",
            "error_being_processed.json",
        )
    }
    assert kinds == {
        "error_wrong_credentials.json": "rejected",
        "error_unable_to_lock.json": "busy",
        "error_being_processed.json": "busy",
    }


@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [
        (502, b"Bad Gateway", "transient"),
        (404, b"<html>Not Found</html>", "rejected"),
        (500, b"[1, 2]", "transient"),
        (400, b'{"errorCode": "999.999", "errorMessage": "new"}', "rejected"),
        (503, b'{"errorCode": "999.999", "errorMessage": "new"}', "transient"),
        (
            500,
            b'{"fault": {"faultstring": "Invalid access token", "detail": '
            b'{"errorcode": "oauth.v2.InvalidAccessToken"}}}',
            "rejected",
        ),
    ],
)
def test_unknown_shapes_fall_back_to_the_status(status: int, content: bytes, kind: str) -> None:
    assert classify_response(status, content).kind == kind


def test_provider_text_in_logs_is_bounded() -> None:
    error = classify_response(503, b"<html>" + b"x" * 10_000 + b"</html>")
    assert error.provider_message is not None and len(error.provider_message) < 400
