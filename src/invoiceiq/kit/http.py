"""The one httpx client factory: explicit timeouts everywhere, connection reuse per process."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 15.0
    write: float = 10.0
    pool: float = 5.0


def make_http_client(
    timeouts: Timeouts | None = None, *, max_connections: int = 100
) -> httpx.AsyncClient:
    t = timeouts or Timeouts()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
        follow_redirects=False,
    )
