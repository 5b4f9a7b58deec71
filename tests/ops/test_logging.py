"""JSON log lines with a request id, and no full phone number anywhere in them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from conftest import make_settings
from invoiceiq.kit.phone import mask_phones_in_text
from invoiceiq.main import create_app
from invoiceiq.ops.logging import (
    QUIET_LOGGERS,
    JsonFormatter,
    MaskPhonesFilter,
    RequestIdFilter,
    configure_logging,
    request_id_var,
)
from invoiceiq.ops.middleware import SLOW_REQUEST_S, _new_request_id
from invoiceiq.web.pdf import PdfContent, build_pdf

# One Kenyan mobile written the three ways people write it, and what each becomes.
PHONES = {
    "254712345678": "2547•••••678",
    "+254 712 345 678": "+2547•••••678",
    "0712345678": "0712•••678",
}
# Digit runs that must never survive in a line: the whole number, and its national part.
FORBIDDEN = ("254712345678", "712345678", "712 345 678")


def assert_no_phone(text: str) -> None:
    for forbidden in FORBIDDEN:
        assert forbidden not in text, f"{forbidden!r} leaked into {text!r}"


def make_handler() -> tuple[logging.Handler, io.StringIO]:
    """The handler `configure_logging` installs, writing to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskPhonesFilter())
    return handler, stream


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    handler, stream = make_handler()
    logger = logging.getLogger("invoiceiq.test_logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("first %s", "line", extra={"invoice": "INV0001", "attempt": 2})
    logger.warning("second\nhas a newline")
    first, second = lines(stream)
    assert first["message"] == "first line"
    assert first["level"] == "info"
    assert first["logger"] == "invoiceiq.test_logging"
    assert first["invoice"] == "INV0001"
    assert first["attempt"] == 2
    assert first["at"].endswith("+00:00")
    assert "request_id" not in first
    assert second["message"] == "second\nhas a newline"
    assert second["level"] == "warning"


def test_request_id_is_in_every_line_while_set(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    token = request_id_var.set("req-42")
    try:
        logger.info("inside")
    finally:
        request_id_var.reset(token)
    logger.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "req-42"
    assert "request_id" not in outside


def test_extra_fields_do_not_override_the_standard_ones(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("hello", extra={"level": "fake", "logger": "fake"})
    (line,) = lines(stream)
    assert line["level"] == "info"
    assert line["logger"] == "invoiceiq.test_logging"


def test_an_exception_stays_on_one_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    try:
        raise ValueError("bad thing")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(stream)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "ValueError: bad thing" in line["exception"]


@pytest.mark.parametrize(("phone", "masked"), sorted(PHONES.items()))
def test_phones_are_masked_in_messages(
    logged: tuple[logging.Logger, io.StringIO], phone: str, masked: str
) -> None:
    logger, stream = logged
    logger.info(f"sending to {phone} now")
    (line,) = lines(stream)
    assert line["message"] == f"sending to {masked} now"
    assert_no_phone(stream.getvalue())


@pytest.mark.parametrize("phone", sorted(PHONES))
def test_phones_are_masked_in_arguments(
    logged: tuple[logging.Logger, io.StringIO], phone: str
) -> None:
    logger, stream = logged
    logger.info("sending to %s (%r)", phone, phone)
    (line,) = lines(stream)
    assert PHONES[phone] in line["message"]
    assert_no_phone(stream.getvalue())


@pytest.mark.parametrize("phone", sorted(PHONES))
def test_phones_are_masked_in_extra_fields(
    logged: tuple[logging.Logger, io.StringIO], phone: str
) -> None:
    logger, stream = logged
    logger.info(
        "sent",
        extra={
            "to": phone,
            "payload": {"to": phone, "items": [phone, {"deep": phone}]},
            "as_number": 254712345678,
            "amount": 150000,
        },
    )
    (line,) = lines(stream)
    assert line["to"] == PHONES[phone]
    assert line["payload"]["items"][1]["deep"] == PHONES[phone]
    assert line["as_number"] == "2547•••••678"
    assert line["amount"] == 150000
    assert_no_phone(stream.getvalue())


@pytest.mark.parametrize("phone", sorted(PHONES))
def test_phones_are_masked_in_exception_text(
    logged: tuple[logging.Logger, io.StringIO], phone: str
) -> None:
    logger, stream = logged
    try:
        raise RuntimeError(f"Daraja refused {phone}")
    except RuntimeError:
        logger.exception("push failed")
    (line,) = lines(stream)
    assert f"RuntimeError: Daraja refused {PHONES[phone]}" in line["exception"]
    assert_no_phone(stream.getvalue())


def test_postgresqls_detail_lines_stay_out_of_logged_exceptions(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    """asyncpg's exception text repeats the offending row (message text included) in a DETAIL
    line; a logged traceback keeps the error, not the values."""
    logger, stream = logged
    try:
        raise RuntimeError(
            'duplicate key value violates unique constraint "t_x_key"\n'
            "DETAIL:  Key (x)=(Logo design for Jane) already exists."
        )
    except RuntimeError:
        logger.exception("write failed")
    (line,) = lines(stream)
    assert "violates unique constraint" in line["exception"]
    assert "Logo design" not in stream.getvalue() and "DETAIL" not in stream.getvalue()


def test_the_filter_alone_masks_for_any_formatter() -> None:
    """A plain-text handler (uvicorn's, pytest's) with the filter also shows no number."""
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "to %s", ("0712345678",), exc_info=None
    )
    record.customer = "+254 712 345 678"
    try:
        raise KeyError("254712345678")
    except KeyError:
        record.exc_info = sys.exc_info()
    assert MaskPhonesFilter().filter(record)
    text = logging.Formatter("%(message)s %(customer)s").format(record)
    assert_no_phone(text)
    assert "0712•••678" in text and "+2547•••••678" in text
    assert "KeyError: '2547•••••678'" in text


def test_a_bad_format_string_does_not_raise_in_the_caller(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("two %s %s", "only-one")
    (line,) = lines(stream)
    assert line["message"] == "two %s %s"


def test_ids_and_timestamps_are_not_mistaken_for_phones(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.info("at 2024-11-26 12:51:03 request ws_CO_261120241251031234567890")
    (line,) = lines(stream)
    assert line["message"] == "at 2024-11-26 12:51:03 request ws_CO_261120241251031234567890"


def test_request_ids_are_never_masked_so_they_can_be_looked_up() -> None:
    """Its random part may be all digits (906012345678): the letter before keeps it an id."""
    made = _new_request_id()
    assert made[0].isalpha() and mask_phones_in_text(made) == made
    digits_only = made[0] + "906012345678-593"
    assert mask_phones_in_text(digits_only) == digits_only


def test_configure_logging_sends_everything_through_one_masking_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = ["uvicorn", "uvicorn.error", "uvicorn.access", "alembic", *QUIET_LOGGERS]
    saved_loggers = {
        name: (logging.getLogger(name).level, logging.getLogger(name).disabled) for name in names
    }
    try:
        configure_logging()
        logging.getLogger("uvicorn.error").info(
            "started for 254712345678", extra={"color_message": "\x1b[36mstarted\x1b[0m"}
        )
        logging.getLogger("uvicorn.access").info("GET /i/abc 200")
        migration = logging.getLogger("alembic.runtime.migration")
        migration.info("Context impl %s.", "SQLiteImpl")
        migration.info("Will assume %s DDL.", "non-transactional")
        migration.info("Running upgrade %s -> %s, %s", "", "0001", "create every table")
        logging.getLogger("httpx").info("HTTP Request: GET https://example/0712345678")
        logging.getLogger("fontTools.subset").info("glyf pruned")  # a PDF's font subsetting
        logging.getLogger("invoiceiq.anything").debug("not at INFO")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, (logger_level, disabled) in saved_loggers.items():
            logging.getLogger(name).setLevel(logger_level)
            logging.getLogger(name).disabled = disabled
    err = capsys.readouterr().err
    entries = [json.loads(line) for line in err.splitlines()]
    assert [entry["message"] for entry in entries] == [
        "started for 2547•••••678",
        "Running upgrade  -> 0001, create every table",
    ]
    assert entries[0]["logger"] == "uvicorn.error"
    assert "color_message" not in entries[0]


# --- A whole request through the app ----------------------------------------------------------


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """Everything logged anywhere, through the handler and levels `configure_logging` sets."""
    handler, stream = make_handler()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ["", *QUIET_LOGGERS]}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    yield stream
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_a_request_logs_no_phone_from_its_path_headers_or_errors(
    root_output: io.StringIO, tmp_path: Path
) -> None:
    app = create_app(
        make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"), run_worker=False
    )

    @app.get("/test/customers/{phone}")
    async def crash(phone: str) -> None:
        raise RuntimeError(f"cannot reach {phone}")

    async with serving(app) as client:
        unmatched = await client.get(
            "/nope/254712345678?to=0712345678", headers={"X-Request-ID": "254712345678"}
        )
        crashed = await client.get("/test/customers/+254 712 345 678")

    assert unmatched.status_code == 404
    assert crashed.status_code == 500
    text = root_output.getvalue()
    assert_no_phone(text)
    entries = [json.loads(line) for line in text.splitlines()]
    requests = [entry for entry in entries if entry["message"] == "request"]
    assert [entry["route"] for entry in requests] == ["unmatched", "/test/customers/{phone}"]
    assert [entry["status"] for entry in requests] == [404, 500]
    assert requests[0]["request_id"] == "2547•••••678"

    (error,) = [entry for entry in entries if entry["message"] == "unhandled error"]
    assert error["request_id"] == crashed.headers["x-request-id"]
    assert error["error_id"] == crashed.json()["error"]["error_id"]
    assert "RuntimeError: cannot reach +2547•••••678" in error["exception"]


async def test_a_mounted_app_is_labelled_by_its_template(
    root_output: io.StringIO, tmp_path: Path
) -> None:
    app = create_app(
        make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"), run_worker=False
    )
    inner = FastAPI()

    @inner.get("/things/{token}")
    async def thing(token: str) -> dict[str, str]:
        raise HTTPException(status_code=409, detail="not this one")

    app.mount("/sub", inner)
    async with serving(app) as client:
        assert (await client.get("/sub/things/s3cr3t-token")).status_code == 409
        assert (await client.get("/sub/elsewhere/s3cr3t-token")).status_code == 404
    text = root_output.getvalue()
    assert "s3cr3t-token" not in text
    routes = [
        json.loads(line)["route"]
        for line in text.splitlines()
        if json.loads(line)["message"] == "request"
    ]
    assert routes == ["/sub/things/{token}", "/sub/*"]


async def test_fast_successes_are_counted_not_logged_but_errors_and_slow_ones_are(
    root_output: io.StringIO, tmp_path: Path
) -> None:
    app = create_app(
        make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"), run_worker=False
    )

    @app.get("/test/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(SLOW_REQUEST_S + 0.05)
        return {"status": "ok"}

    async with serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/test/slow")).status_code == 200
        assert (await client.get("/nope")).status_code == 404
        metrics_text = (await client.get("/metrics")).text
    logged = [
        (entry["route"], entry["status"])
        for entry in map(json.loads, root_output.getvalue().splitlines())
        if entry["message"] == "request"
    ]
    assert logged == [("/test/slow", 200), ("unmatched", 404)]
    assert 'route="/healthz",status="200"' in metrics_text


def test_a_pdf_with_characters_its_font_lacks_logs_none_of_them(root_output: io.StringIO) -> None:
    """fpdf lists the characters it has no glyph for: a customer's name, a description."""
    content = PdfContent(
        business_name="Wanjiku Designs",
        number="INV7K3QX9A",
        date="26 Nov 2026",
        status_label="Unpaid",
        customer="王小明 · 2547•••••678",
        description="设计费用 🎂",
        amount="KSh 1,500",
        vat_line=None,
        paid=False,
        paid_at=None,
        receipt=None,
        link=None,
    )
    assert build_pdf(content).startswith(b"%PDF")
    entries = [json.loads(line) for line in root_output.getvalue().splitlines()]
    shown = json.dumps(entries, ensure_ascii=False)  # as a log viewer shows them
    assert not any(char in shown for char in "王小明设计费用🎂")
