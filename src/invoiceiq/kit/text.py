"""Text that JSON allows but PostgreSQL's json/jsonb refuses: NUL and unpaired surrogates.

https://www.postgresql.org/docs/current/datatype-json.html
"""

from __future__ import annotations

from typing import Any


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
