"""Real HTTP servers for tests: an ASGI app under uvicorn on a free loopback port.

`async with serve_app(app) as base_url:` runs the app as a task on the test's own event loop, so
objects shared with the app (a simulator fake, a recorder) are touched from one loop only, as
they are in production. `Recorder` is a stand-in webhook / callback receiver that keeps what it
got; `closed_port_url()` gives an address where nothing listens (connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

LOOPBACK = "127.0.0.1"


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone (pytest owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, startup_timeout: float = 10.0) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 at a free port for the block's duration; yields its base URL."""
    # Binding port 0 ourselves and handing uvicorn the socket avoids the pick-then-bind race.
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="auto",
        # Requests deliberately held by a test (simulated timeouts) must not stall teardown.
        timeout_graceful_shutdown=1,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if task.done():
                    task.result()  # surfaces the start-up error
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """An app that records every request and answers `status` (or what `respond` returns)."""

    status: int = 200
    respond: Callable[[Received], int] | None = None
    received: list[Received] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
        async def record(request: Request, path: str) -> Response:
            item = Received(
                method=request.method,
                path="/" + path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.body(),
            )
            self.received.append(item)
            async with self._arrived:
                self._arrived.notify_all()
            status = self.respond(item) if self.respond else self.status
            return Response(status_code=status, content=b'{"ok": true}')

        return app

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], *, timeout: float = 5.0
    ) -> list[Received]:
        """Wait until `predicate(received)` holds; returns the list, or raises TimeoutError."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self.received))
        return self.received
