"""JSON logs with a request id; phone numbers masked before anything is written."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from invoiceiq.kit.phone import mask_phones_in_text
from invoiceiq.kit.text import without_value_details

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
# uvicorn's `color_message` is its message again with terminal colours: noise in JSON.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# httpx logs every outbound URL at INFO; provider URLs may carry tokens and phone numbers.
# fontTools logs a dozen lines per PDF at INFO ("glyf pruned"): chatter. fpdf warns of
# characters the font has no glyph for by listing them: a customer's name, a description.
QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "fontTools": logging.WARNING,
    "fpdf": logging.ERROR,
}
# How deep `extra` values (dicts, lists) are searched for phone numbers.
_MAX_DEPTH = 6


def mask_value(value: Any, depth: int = 0) -> Any:
    """`value` with phone numbers masked in every string (and integer) it holds."""
    if isinstance(value, str):
        return mask_phones_in_text(value)
    if isinstance(value, bool) or depth >= _MAX_DEPTH:
        return value
    if isinstance(value, int):
        # 254712345678 passed as a number is still a phone number.
        text = str(value)
        masked = mask_phones_in_text(text)
        return value if masked == text else masked
    if isinstance(value, dict):
        return {key: mask_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(item, depth + 1) for item in value]
    return value


def _masked_str(value: object) -> str:
    return mask_phones_in_text(str(value))


class MaskPhonesFilter(logging.Filter):
    """Mask full phone numbers in the message, its arguments, `extra` fields and tracebacks.

    Put it on the handler (as `configure_logging` does): handler filters see every record that
    reaches the handler, including those propagated from other loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg = mask_phones_in_text(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                setattr(record, key, mask_value(value))
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set, so every handler shows the masked text.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones_in_text(without_value_details(record.exc_text))
        if record.stack_info:
            record.stack_info = mask_phones_in_text(record.stack_info)
        return True


class DropMigrationChatter(logging.Filter):
    """Drop Alembic's two setup lines, which every /readyz probe would otherwise log.

    "Running upgrade …" lines, the ones that say something, are kept.
    """

    _CHATTER = ("Context impl ", "Will assume ")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "alembic.runtime.migration"
            and isinstance(record.msg, str)
            and record.msg.startswith(self._CHATTER)
        )


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the `extra` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Masked here too, so this formatter is safe even without MaskPhonesFilter.
            "message": mask_phones_in_text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry.setdefault(key, mask_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = mask_phones_in_text(without_value_details(record.exc_text))
        if record.stack_info:
            entry["stack"] = mask_phones_in_text(self.formatStack(record.stack_info))
        return json.dumps(entry, default=_masked_str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger through one JSON handler (stderr) with masking and request ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Order matters: the request id is set first, then masked with everything else.
    handler.addFilter(DropMigrationChatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskPhonesFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
        # A uvicorn started earlier in the process may have set its own level: ours applies.
        uvicorn_logger.setLevel(logging.NOTSET)
    # One line per request comes from our middleware; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
