"""Where the Daraja OAuth token lives: the database (every process), or memory (one process).

Daraja invalidates the previous token whenever a new one is requested
(https://developer.safaricom.co.ke/apis/Authorization, FAQ "Can I generate multiple tokens?").
So tokens cannot be per process: two processes refreshing at once would each invalidate the
other's token and both would then see `404.001.03 Invalid Access Token` (reference §0.10). One
token is shared, one refresh happens at a time, and it happens `refresh_margin_s` before expiry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa import repository
from invoiceiq.mpesa.client import AccessToken
from invoiceiq.mpesa.repository import StoredToken

Fetch = Callable[[], Awaitable[AccessToken]]
Clock = Callable[[], datetime]


class DatabaseTokenStore:
    """The token in the `provider_token` row `name`, shared by every process on the database.

    `get` reads the row without locking; only when the token is missing or due for refresh does
    it take the row's lock, look again (another process may have refreshed meanwhile) and fetch.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        name: str = "daraja",
        refresh_margin_s: float = 60,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._name = name
        self._margin = timedelta(seconds=refresh_margin_s)
        self._clock = clock
        # Coroutines of this process queue here rather than each holding a database connection
        # while they wait for the row lock.
        self._refreshing = asyncio.Lock()

    async def get(self, fetch: Fetch) -> str:
        async with self._sessions() as session:
            stored = await repository.read_token(session, self._name)
        token = self._usable(stored)
        if token is not None:
            return token
        async with self._refreshing:
            return await self._refresh(fetch)

    async def invalidate(self, token: str) -> None:
        async with unit_of_work(self._sessions) as session:
            await repository.forget_token(session, self._name, token=token, now=self._clock())

    async def _refresh(self, fetch: Fetch) -> str:
        # A deliberate exception to "no network inside a state-changing transaction": the
        # token request is made while this transaction holds the row lock (PostgreSQL) or the
        # write lock (SQLite). Fetching outside the lock would let two processes fetch at once,
        # and since each fetch invalidates the token before it, one of them would store a
        # token that is already dead. The transaction is short: lock, look again, fetch (bounded
        # by the HTTP client's timeouts), store, commit.
        async with unit_of_work(self._sessions) as session:
            stored = await repository.lock_token(session, self._name, now=self._clock())
            token = self._usable(stored)
            if token is not None:
                return token
            fresh = await fetch()
            await repository.save_token(
                session,
                self._name,
                token=fresh.token,
                expires_at=fresh.expires_at,
                now=self._clock(),
            )
        return fresh.token

    def _usable(self, stored: StoredToken | None) -> str | None:
        """The stored token while it is not yet due for refresh, else None."""
        if stored is None or stored.token is None or stored.expires_at is None:
            return None
        return stored.token if self._clock() < stored.expires_at - self._margin else None


class MemoryTokenStore:
    """The token in this process's memory: for a single process (tests, tools), never for
    several processes sharing one Daraja app."""

    def __init__(self, refresh_margin_s: float = 60, *, clock: Clock = utcnow) -> None:
        self._margin = timedelta(seconds=refresh_margin_s)
        self._clock = clock
        self._token: AccessToken | None = None
        self._refreshing = asyncio.Lock()

    async def get(self, fetch: Fetch) -> str:
        current = self._token
        if current and self._usable(current):
            return current.token
        async with self._refreshing:
            current = self._token
            if current and self._usable(current):
                return current.token
            self._token = await fetch()
            return self._token.token

    async def invalidate(self, token: str) -> None:
        if self._token is not None and self._token.token == token:
            self._token = None

    def _usable(self, token: AccessToken) -> bool:
        return self._clock() < token.expires_at - self._margin
