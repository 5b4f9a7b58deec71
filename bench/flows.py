"""The end-to-end driver: complete invoice-and-pay flows, as the two phones would do them.

A flow: the merchant types `invoice 07… 1500 Bench order`; once the invoice is delivered to the
customer (accepted by the simulator: the invoice is SENT), the customer taps its Pay button;
the simulator's auto-answer accepts the PIN prompt and posts the callback; the flow is complete
when the invoice is PAID and both receipts (customer's and merchant's) were accepted by the
simulator. Phones act through the simulator's control API; progress is read from the
database by one tracker for all flows (a poll per flow would load the simulator instead).
The tracker reads inside long READ COMMITTED transactions (a fresh snapshot per statement, one
commit per 30 s), so its polls add a handful of commits to the count, which are subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

AMOUNT = 1500
POLL_S = 0.05
FLOW_TIMEOUT_S = 120.0
RECEIPT_KINDS = ("receipt", "payment_received")

DELIVERED_SQL = """
SELECT customer_phone, number FROM invoice
WHERE customer_phone = ANY($1::text[]) AND status IN ('SENT', 'PAID')
"""
COMPLETED_SQL = """
SELECT i.customer_phone FROM invoice i JOIN message_log m ON m.invoice_id = i.id
WHERE i.customer_phone = ANY($1::text[]) AND i.status = 'PAID' AND m.direction = 'out'
  AND m.kind IN ('receipt', 'payment_received') AND m.provider_message_id IS NOT NULL
GROUP BY i.customer_phone HAVING count(DISTINCT m.kind) = 2
"""


def merchant_phone(index: int) -> str:
    return f"2547100{index:05d}"


def customer_phone(index: int) -> str:
    return f"2547{20_000_000 + index:08d}"


@dataclass(eq=False)
class Flow:
    index: int
    merchant: str
    customer: str
    started: float = 0.0  # wall clock (time.time), comparable with the servers' timestamps
    number: str | None = None
    tapped_at: float | None = None
    done_at: float | None = None
    error: str | None = None
    webhook_statuses: list[int] = field(default_factory=list)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    completed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def duration_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.started


class Tracker:
    """Watches the database for delivered invoices and completed flows, for all flows at once."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiting_delivery: dict[str, Flow] = {}
        self._waiting_completion: dict[str, Flow] = {}
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0

    def expect_delivery(self, flow: Flow) -> None:
        self._waiting_delivery[flow.customer] = flow

    def expect_completion(self, flow: Flow) -> None:
        self._waiting_completion[flow.customer] = flow

    def forget(self, flow: Flow) -> None:
        self._waiting_delivery.pop(flow.customer, None)
        self._waiting_completion.pop(flow.customer, None)

    async def __aenter__(self) -> Tracker:
        self._connection = await asyncpg.connect(self._dsn)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()

    async def _run(self) -> None:
        assert self._connection is not None
        connection = self._connection
        while True:
            transaction = connection.transaction(isolation="read_committed", readonly=True)
            await transaction.start()
            self.transactions += 1
            try:
                # A fresh snapshot per statement (READ COMMITTED), one commit per 30 s.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    await self._poll(connection)
                    await asyncio.sleep(POLL_S)
            finally:
                await transaction.commit()

    async def _poll(self, connection: asyncpg.Connection) -> None:
        if self._waiting_delivery:
            rows = await connection.fetch(DELIVERED_SQL, list(self._waiting_delivery))
            for phone, number in rows:
                flow = self._waiting_delivery.pop(phone, None)
                if flow is not None:
                    flow.number = number
                    flow.delivered.set()
        if self._waiting_completion:
            rows = await connection.fetch(COMPLETED_SQL, list(self._waiting_completion))
            now = time.time()
            for (phone,) in rows:
                flow = self._waiting_completion.pop(phone, None)
                if flow is not None:
                    flow.done_at = now
                    flow.completed.set()


class Driver:
    """Runs flows through the simulator's control API."""

    def __init__(self, simulator_origin: str, tracker: Tracker) -> None:
        self._http = httpx.AsyncClient(
            base_url=f"{simulator_origin}/simulator",
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        self._tracker = tracker
        self.control_requests = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        self.control_requests += 1
        response = await self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def write(self, phone: str, body: dict[str, Any]) -> int:
        answer = await self.control("POST", f"/phones/{phone}/messages", json=body)
        status: int = answer["webhook_status"]
        return status

    async def run(self, flow: Flow) -> None:
        try:
            async with asyncio.timeout(FLOW_TIMEOUT_S):
                await self._steps(flow)
        except TimeoutError:
            flow.error = "timed out"
        except (httpx.HTTPError, KeyError, ValueError) as error:
            flow.error = f"{type(error).__name__}: {error}"
        finally:
            self._tracker.forget(flow)

    async def _steps(self, flow: Flow) -> None:
        flow.started = time.time()
        self._tracker.expect_delivery(flow)
        # A webhook the app answered late (status 0) may still have been handled: the
        # tracker decides, not the status; statuses are kept for the report.
        command = f"invoice 0{flow.customer[3:]} {AMOUNT} Bench order {flow.index}"
        flow.webhook_statuses.append(await self.write(flow.merchant, {"text": command}))
        await flow.delivered.wait()
        self._tracker.expect_completion(flow)
        flow.tapped_at = time.time()
        tap = {"button_id": f"pay:{flow.number}", "kind": "template"}
        flow.webhook_statuses.append(await self.write(flow.customer, tap))
        await flow.completed.wait()


def pending(flows: Iterable[Flow]) -> int:
    return sum(1 for f in flows if f.done_at is None and f.error is None)
