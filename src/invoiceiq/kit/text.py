"""Text that JSON allows but PostgreSQL's json/jsonb refuses: NUL and unpaired surrogates
(https://www.postgresql.org/docs/current/datatype-json.html); error text without the values
PostgreSQL echoes in it; and the checks on text people type that others will read (an
invoice's description, a business or customer name), the same from chat and from the API.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Bidirectional embeddings, overrides and isolates (U+202A-202E, U+2066-2069): they reorder
# what is shown, so "Logo design 1500" could read as something else on the invoice.
DIRECTION_OVERRIDES = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
CONTROL_CHARACTERS = "Remove the control characters (such as NUL)."
DIRECTION_CHARACTERS = "Remove the text-direction characters: they can make text read otherwise."


def one_line(text: str) -> str:
    """Line breaks, tabs and runs of spaces as one space; none at either end."""
    return " ".join(text.split())


def visible_length(text: str) -> int:
    """Characters a reader sees: not spaces, nor format or control characters (zero-width)."""
    return sum(1 for char in text if unicodedata.category(char)[0] not in ("C", "Z"))


def unshowable(text: str) -> str | None:
    """Why `text` (one line) cannot be shown to someone else as typed, or None: control
    characters (nothing a person types; PostgreSQL cannot store NUL), or direction overrides."""
    if any(unicodedata.category(char) == "Cc" for char in text):
        return CONTROL_CHARACTERS
    if any(char in DIRECTION_OVERRIDES for char in text):
        return DIRECTION_CHARACTERS
    return None


# PostgreSQL's DETAIL line repeats the offending values ("Key (x)=(…) already exists",
# "Failing row contains (…)"): message text, phone numbers. asyncpg puts it in the text of its
# exceptions, which tracebacks show.
_DETAIL_LINES = re.compile(r"^[ \t]*DETAIL:.*(?:\n|$)", re.MULTILINE)


def without_value_details(text: str) -> str:
    """`text` (an error, a traceback) without PostgreSQL's DETAIL lines."""
    return _DETAIL_LINES.sub("", text)


def storable(text: str | None) -> str | None:
    """`text` without NUL characters, with unpaired surrogates replaced."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "")
    return cleaned.encode("utf-8", "replace").decode("utf-8")


def json_is_storable(value: Any) -> bool:
    """Whether every string (keys included) in a parsed JSON document is storable as is."""
    if isinstance(value, str):
        return storable(value) == value
    if isinstance(value, dict):
        return all(json_is_storable(k) and json_is_storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(json_is_storable(item) for item in value)
    return True
