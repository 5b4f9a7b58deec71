"""The whole app (with its in-process simulator) on a loopback port, and phones that use it.

Everything goes over real HTTP: the phone writes through the simulator's control API, the
simulator posts the webhook to the app, the app's worker sends through the simulator's
360dialog and Daraja fakes, and the test reads what each phone received.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from invoiceiq.config import Settings
from invoiceiq.main import create_app
from support.db import make_settings
from support.servers import LOOPBACK, _QuietServer

Message = dict[str, Any]


def bind_free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


@dataclass
class RunningApp:
    origin: str
    settings: Settings
    http: httpx.AsyncClient

    def phone(self, msisdn: str) -> Phone:
        return Phone(self, msisdn)

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, f"/simulator{path}", **kwargs)
        response.raise_for_status()
        return response.json()


@dataclass
class Phone:
    app: RunningApp
    msisdn: str
    # How many inbox messages there were before the last thing this phone wrote: the replies
    # to it start there, however fast they arrive.
    _mark: int = 0

    async def say(self, text: str) -> dict[str, Any]:
        return await self._write({"text": text})

    async def tap(self, button_id: str, *, kind: str = "reply") -> dict[str, Any]:
        return await self._write({"button_id": button_id, "kind": kind})

    async def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        self._mark = len(await self.inbox())
        answer: dict[str, Any] = await self.app.control(
            "POST", f"/phones/{self.msisdn}/messages", json=body
        )
        assert answer["webhook_status"] == 200, answer
        return answer

    async def inbox(self) -> list[Message]:
        messages: list[Message] = await self.app.control("GET", f"/phones/{self.msisdn}/inbox")
        return messages

    async def wait_for(
        self, predicate: Callable[[list[Message]], bool], *, timeout: float = 15.0
    ) -> list[Message]:
        """Poll the inbox until `predicate(messages)` holds."""
        messages: list[Message] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    messages = await self.inbox()
                    if predicate(messages):
                        return messages
                    await asyncio.sleep(0.05)
        except TimeoutError:
            texts = [m.get("text") for m in messages]
            raise AssertionError(
                f"{self.msisdn} never got the expected messages: {texts}"
            ) from None

    async def wait_for_count(self, count: int, *, timeout: float = 15.0) -> list[Message]:
        return await self.wait_for(lambda messages: len(messages) >= count, timeout=timeout)

    async def next_reply(self, *, timeout: float = 15.0) -> Message:
        """The next message after the mark (set when this phone last wrote); moves the mark."""
        messages = await self.wait_for_count(self._mark + 1, timeout=timeout)
        self._mark += 1
        return messages[self._mark - 1]

    def skip_to(self, count: int) -> None:
        """Messages before `count` have been seen (e.g. ones not caused by this phone)."""
        self._mark = count


@contextlib.asynccontextmanager
async def running_app(
    database_url: str, *, run_worker: bool = True, **overrides: Any
) -> AsyncIterator[RunningApp]:
    """`run_worker=False` is `serve --no-worker`: the outbox is left to worker processes."""
    sock = bind_free_port()
    origin = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    values: dict[str, Any] = {"database_url": database_url, "base_url": origin}
    values.update(overrides)
    settings = make_settings(**values)
    app = create_app(settings, run_worker=run_worker, local_origin=origin)
    server = _QuietServer(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the app stopped before it started")
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=origin, timeout=20) as http:
            yield RunningApp(origin, settings, http)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def rows(database_url: str, model: Any, *where: Any) -> list[Any]:
    """Read rows straight from the database the app uses (a separate engine, like an operator)."""
    import sqlalchemy as sa

    from invoiceiq.db.engine import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        async with make_session_factory(engine)() as session:
            return list(await session.scalars(sa.select(model).where(*where)))
    finally:
        await engine.dispose()


def texts_of(messages: list[Message]) -> list[str]:
    return [m.get("text") or "" for m in messages]
