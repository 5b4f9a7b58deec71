"""The shared Daraja token on SQLite and PostgreSQL: one refresh at a time across processes.

Two engines on one database stand for two processes: they share nothing but the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from invoiceiq.config import SANDBOX_PASSKEY
from invoiceiq.db.engine import SessionFactory, make_engine, make_session_factory
from invoiceiq.kit.clock import utcnow
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.mpesa.client import AccessToken, DarajaClient
from invoiceiq.mpesa.models import ProviderToken
from invoiceiq.mpesa.simulator import DarajaFake
from invoiceiq.mpesa.token_store import DatabaseTokenStore, MemoryTokenStore
from invoiceiq.simulator.config import SimulatorSettings
from support.servers import serve_app


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class TokenServer:
    """Stands in for Daraja's OAuth endpoint: numbered tokens, each valid `lifetime` seconds."""

    def __init__(self, clock: Clock, *, lifetime: float = 3599, delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.issued = 0

    async def fetch(self) -> AccessToken:
        self.issued += 1
        number = self.issued
        await asyncio.sleep(self.delay)
        return AccessToken(f"token-{number}", self.clock() + timedelta(seconds=self.lifetime))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def other_process(database_url: str) -> AsyncIterator[SessionFactory]:
    """A second engine on the same database: another process, as far as locks go."""
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    await engine.dispose()


async def stored(sessions: SessionFactory) -> ProviderToken | None:
    async with sessions() as session:
        return await session.scalar(sa.select(ProviderToken).where(ProviderToken.name == "daraja"))


async def test_the_first_get_fetches_and_stores(sessions: SessionFactory, clock: Clock) -> None:
    server = TokenServer(clock)
    store = DatabaseTokenStore(sessions, clock=clock)
    assert await store.get(server.fetch) == "token-1"
    assert await store.get(server.fetch) == "token-1"
    assert server.issued == 1
    row = await stored(sessions)
    assert row is not None and row.token == "token-1"
    assert row.expires_at == clock() + timedelta(seconds=3599)


async def test_two_processes_asking_at_once_fetch_once(
    sessions: SessionFactory, other_process: SessionFactory, clock: Clock
) -> None:
    # The fetch is slow, so every caller arrives while the first refresh holds the lock.
    server = TokenServer(clock, delay=0.3)
    first = DatabaseTokenStore(sessions, clock=clock)
    second = DatabaseTokenStore(other_process, clock=clock)
    tokens = await asyncio.gather(*(store.get(server.fetch) for store in [first, second] * 4))
    assert set(tokens) == {"token-1"}
    assert server.issued == 1


async def test_an_expired_token_is_refreshed_once(
    sessions: SessionFactory, other_process: SessionFactory, clock: Clock
) -> None:
    server = TokenServer(clock, lifetime=600, delay=0.2)
    first = DatabaseTokenStore(sessions, clock=clock)
    second = DatabaseTokenStore(other_process, clock=clock)
    assert await first.get(server.fetch) == "token-1"
    clock.advance(601)
    tokens = await asyncio.gather(*(store.get(server.fetch) for store in [first, second] * 3))
    assert set(tokens) == {"token-2"}
    assert server.issued == 2


async def test_a_token_is_refreshed_a_margin_before_it_expires(
    sessions: SessionFactory, clock: Clock
) -> None:
    server = TokenServer(clock, lifetime=600)
    store = DatabaseTokenStore(sessions, refresh_margin_s=60, clock=clock)
    await store.get(server.fetch)
    clock.advance(539)
    assert await store.get(server.fetch) == "token-1"
    clock.advance(1)  # 60 s left: due
    assert await store.get(server.fetch) == "token-2"


async def test_invalidate_forces_a_refresh_everywhere(
    sessions: SessionFactory, other_process: SessionFactory, clock: Clock
) -> None:
    server = TokenServer(clock)
    first = DatabaseTokenStore(sessions, clock=clock)
    second = DatabaseTokenStore(other_process, clock=clock)
    assert await first.get(server.fetch) == "token-1"
    assert await second.get(server.fetch) == "token-1"
    await first.invalidate("token-1")
    assert await second.get(server.fetch) == "token-2"
    assert await first.get(server.fetch) == "token-2"
    assert server.issued == 2


async def test_invalidating_a_replaced_token_keeps_the_new_one(
    sessions: SessionFactory, other_process: SessionFactory, clock: Clock
) -> None:
    # Both processes saw token-1 refused; the first one refreshed already, the second reports
    # late: its report must not wipe token-2, which would start a refresh ping-pong.
    server = TokenServer(clock)
    first = DatabaseTokenStore(sessions, clock=clock)
    second = DatabaseTokenStore(other_process, clock=clock)
    await first.get(server.fetch)
    await first.invalidate("token-1")
    assert await first.get(server.fetch) == "token-2"
    await second.invalidate("token-1")
    assert await second.get(server.fetch) == "token-2"
    assert server.issued == 2


async def test_a_failed_fetch_stores_nothing(sessions: SessionFactory, clock: Clock) -> None:
    async def failing() -> AccessToken:
        raise RuntimeError("Daraja is down")

    store = DatabaseTokenStore(sessions, clock=clock)
    with pytest.raises(RuntimeError):
        await store.get(failing)
    row = await stored(sessions)
    assert row is None or row.token is None
    assert await store.get(TokenServer(clock).fetch) == "token-1"


async def test_names_are_separate_rows(sessions: SessionFactory, clock: Clock) -> None:
    server = TokenServer(clock)
    assert await DatabaseTokenStore(sessions, "daraja", clock=clock).get(server.fetch) == "token-1"
    other = DatabaseTokenStore(sessions, "daraja-till", clock=clock)
    assert await other.get(server.fetch) == "token-2"


async def test_the_memory_store_refreshes_once(clock: Clock) -> None:
    server = TokenServer(clock, lifetime=600, delay=0.05)
    store = MemoryTokenStore(clock=clock)
    assert set(await asyncio.gather(*(store.get(server.fetch) for _ in range(5)))) == {"token-1"}
    clock.advance(600)
    assert await store.get(server.fetch) == "token-2"
    await store.invalidate("token-1")  # an old token: nothing to forget
    assert await store.get(server.fetch) == "token-2"
    await store.invalidate("token-2")
    assert await store.get(server.fetch) == "token-3"


# Two app processes (two engines) with real clients against the fake over HTTP.


class CountingStore(DatabaseTokenStore):
    """The database store, counting the token requests it makes."""

    fetches = 0  # across every instance: all the "processes" together

    async def get(self, fetch: Callable[[], Awaitable[AccessToken]]) -> str:
        async def counted() -> AccessToken:
            CountingStore.fetches += 1
            return await fetch()

        return await super().get(counted)


async def stored_token(sessions: SessionFactory) -> str | None:
    row = await stored(sessions)
    return row.token if row else None


def client(base_url: str, http: httpx.AsyncClient, sessions: SessionFactory) -> DarajaClient:
    return DarajaClient(
        base_url=base_url,
        consumer_key="key",
        consumer_secret="secret",
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        transaction_type="CustomerPayBillOnline",
        party_b=None,
        http=http,
        tokens=CountingStore(sessions),
    )


async def test_processes_share_one_daraja_token_and_recover_from_a_superseded_one(
    sessions: SessionFactory, other_process: SessionFactory
) -> None:
    CountingStore.fetches = 0
    # Not a test of timeouts: eight pushes at once to a fake served in this same event loop,
    # on a busy two-core CI machine, once took over a second to be accepted (ConnectTimeout).
    http = make_http_client(Timeouts(connect=5, read=5, write=5, pool=5))
    fake = DarajaFake(
        SimulatorSettings(),
        consumer_key="key",
        consumer_secret="secret",
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        http=http,
    )
    app = FastAPI()
    app.include_router(fake.router)
    try:
        async with serve_app(app) as base:
            web, worker = client(base, http, sessions), client(base, http, other_process)
            phones = [f"2547120001{n:02d}" for n in range(8)]
            pushes = [
                (web if n % 2 else worker).stk_push(
                    phone=phone,
                    amount=10,
                    account_reference="INV1",
                    description="Test",
                    callback_url="http://127.0.0.1:9/cb",
                )
                for n, phone in enumerate(phones)
            ]
            # Were tokens per process, the second mint would kill the first process's token.
            await asyncio.gather(*pushes)
            assert CountingStore.fetches == 1
            first_token = await stored_token(sessions)
            assert len(fake.prompts(state="open")) == 8

            # Something outside mints a token (a colleague's script, the Daraja portal).
            outside = await http.get(
                f"{base}/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=("key", "secret"),
            )
            assert outside.status_code == 200
            # The web process is refused once, refreshes once, retries once; the worker then
            # uses the refreshed token without minting its own.
            await web.stk_query(fake.prompts()[0]["checkout_request_id"])
            assert CountingStore.fetches == 2
            refreshed = await stored_token(sessions)
            assert refreshed not in (None, first_token, outside.json()["access_token"])
            await worker.stk_query(fake.prompts()[1]["checkout_request_id"])
            assert CountingStore.fetches == 2
            assert await stored_token(other_process) == refreshed
    finally:
        await fake.aclose()
        await http.aclose()
