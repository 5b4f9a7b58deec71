"""Rate-limit counter SQL: one atomic upsert per hit, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.web.models import RateLimitCounter


async def hit(session: AsyncSession, *, key: str, window_index: int, expires_at: datetime) -> int:
    """Count one hit on `key` in window `window_index`; the count in that window after it.

    A single INSERT … ON CONFLICT DO UPDATE, so simultaneous hits from several processes are
    all counted: a read-then-write could let two of them see the same count.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = RateLimitCounter.__table__
    values = insert(RateLimitCounter).values(
        key=key, window_index=window_index, count=1, expires_at=expires_at
    )
    same_window = table.c.window_index == values.excluded.window_index
    statement = values.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "count": sa.case((same_window, table.c.count + 1), else_=1),
            "window_index": values.excluded.window_index,
            "expires_at": values.excluded.expires_at,
        },
    ).returning(table.c.count)
    return int((await session.execute(statement)).scalar_one())


async def delete_expired(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(
        sa.delete(RateLimitCounter)
        .where(RateLimitCounter.expires_at < now)
        .execution_options(synchronize_session=False)
    )
