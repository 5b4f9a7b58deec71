"""The one source of the current time: aware UTC, shown to people in Nairobi time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")


def utcnow() -> datetime:
    return datetime.now(UTC)


def nairobi(moment: datetime) -> datetime:
    return moment.astimezone(NAIROBI)
