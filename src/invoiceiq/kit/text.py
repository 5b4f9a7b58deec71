"""Text that JSON allows but PostgreSQL's json/jsonb refuses: NUL and unpaired surrogates
(https://www.postgresql.org/docs/current/datatype-json.html); and error text without the
values PostgreSQL echoes in it.
"""

from __future__ import annotations

import re
from typing import Any

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
