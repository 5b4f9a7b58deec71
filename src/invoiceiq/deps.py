"""Request dependencies: settings, the request's session (a commit site) and the like."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a hop on every request.
    settings: Settings = request.app.state.settings
    return settings


def get_session_factory(request: Request) -> SessionFactory:
    sessions: SessionFactory = request.app.state.sessions
    return sessions


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent (scope="function").

    It rolls back when the endpoint raises, so an error never leaves half the work written.
    """
    async with get_session_factory(request)() as session, session.begin():
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
