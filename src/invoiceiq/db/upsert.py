"""INSERT ... ON CONFLICT DO NOTHING on both dialects."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_if_absent(
    session: AsyncSession, model: Any, values: dict[str, Any], *, conflict_on: list[str]
) -> bool:
    """Insert a row unless one with the same `conflict_on` values exists; True when inserted.

    One statement, so two concurrent inserts of the same key cannot both succeed nor fail.
    Column defaults (ids, timestamps) are filled by Core as for any insert.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table: sa.Table = model.__table__
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict_on)
        .returning(table.c.id)
    )
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None
