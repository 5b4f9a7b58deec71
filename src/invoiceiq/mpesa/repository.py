"""Provider token SQL: read the row, lock it for a refresh, store and forget tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.mpesa.models import ProviderToken


@dataclass(frozen=True)
class StoredToken:
    token: str | None
    expires_at: datetime | None


async def read_token(session: AsyncSession, name: str) -> StoredToken | None:
    row = (
        await session.execute(
            sa.select(ProviderToken.token, ProviderToken.expires_at).where(
                ProviderToken.name == name
            )
        )
    ).one_or_none()
    return StoredToken(row.token, row.expires_at) if row else None


async def lock_token(session: AsyncSession, name: str, *, now: datetime) -> StoredToken:
    """The row, locked until the transaction ends; created empty first when missing.

    PostgreSQL: the insert-if-absent makes a row to lock even for the very first token, and
    `FOR UPDATE` makes every other refresher wait for this transaction. SQLite has no row locks
    (SQLAlchemy leaves FOR UPDATE out there); its transactions start with BEGIN IMMEDIATE
    (db/engine.py), which already holds the database's single write lock.
    """
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        insert(ProviderToken)
        .values(name=name, token=None, expires_at=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=[ProviderToken.name])
    )
    row = (
        await session.execute(
            sa.select(ProviderToken.token, ProviderToken.expires_at)
            .where(ProviderToken.name == name)
            .with_for_update()
        )
    ).one()
    return StoredToken(row.token, row.expires_at)


async def save_token(
    session: AsyncSession, name: str, *, token: str, expires_at: datetime, now: datetime
) -> None:
    await session.execute(
        sa.update(ProviderToken)
        .where(ProviderToken.name == name)
        .values(token=token, expires_at=expires_at, updated_at=now)
    )


async def forget_token(session: AsyncSession, name: str, *, token: str, now: datetime) -> bool:
    """Clear the row only while it still holds `token`; True when it did.

    Conditional, so a process reporting an old token cannot wipe the newer one another
    process has just stored.
    """
    result = await session.execute(
        sa.update(ProviderToken)
        .where(ProviderToken.name == name, ProviderToken.token == token)
        .values(token=None, expires_at=None, updated_at=now)
        .returning(ProviderToken.name)
    )
    return result.scalar_one_or_none() is not None
