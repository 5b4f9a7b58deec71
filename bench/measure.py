"""Reading figures after the fact: latencies from the servers' own timestamps, CPU, counters,
and the end-to-end self-checks.

Latencies come from where the events happened: the STK request's arrival is the simulator's
prompt time, the callback's arrival is the app's inbox row, a receipt's acceptance is the
simulator's inbox time; the tap is the driver's clock just before it asked the simulator to
tap. All are wall-clock times on one machine.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.flows import Driver, Flow

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROVIDER_TOPICS = ("whatsapp.send", "mpesa.stk_push", "mpesa.confirm", "mpesa.reconcile")
_METRIC = re.compile(r"^invoiceiq_http_requests_total\{([^}]*)\}\s+([0-9.eE+]+)$")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


LATENCY_SQL = """
SELECT i.customer_phone, p.checkout_request_id,
  (SELECT e.received_at FROM inbox_event e
    WHERE e.source = 'mpesa' AND e.external_id = p.checkout_request_id || ':0') AS callback_at,
  (SELECT m.provider_message_id FROM message_log m WHERE m.invoice_id = i.id
    AND m.direction = 'out' AND m.kind = 'receipt' ORDER BY m.created_at LIMIT 1) AS to_customer,
  (SELECT m.provider_message_id FROM message_log m WHERE m.invoice_id = i.id
    AND m.direction = 'out' AND m.kind = 'payment_received' ORDER BY m.created_at LIMIT 1)
    AS to_merchant
FROM invoice i JOIN payment p ON p.invoice_id = i.id AND p.status = 'SUCCESS'
WHERE i.customer_phone = ANY($1::text[])
"""


async def latencies(driver: Driver, db: asyncpg.Connection, flows: list[Flow]) -> dict[str, Any]:
    """tap → STK request at the simulator, and callback → last receipt accepted by it (ms)."""
    done = [f for f in flows if f.done_at is not None and f.tapped_at is not None]
    if not done:
        return {"tap_to_stk_ms": [], "callback_to_receipts_ms": []}
    prompts: list[dict[str, Any]] = await driver.control("GET", "/mpesa/prompts")
    prompt_at = {p["phone"]: _ts(p["at"]) for p in prompts}
    async with db.transaction(readonly=True):
        rows = await db.fetch(LATENCY_SQL, [f.customer for f in done])
    by_phone = {row["customer_phone"]: row for row in rows}
    accepted = await _accepted_at(driver, done)
    tap_to_stk: list[float] = []
    callback_to_receipts: list[float] = []
    for flow in done:
        assert flow.tapped_at is not None
        if flow.customer in prompt_at:
            tap_to_stk.append((prompt_at[flow.customer] - flow.tapped_at) * 1000)
        row = by_phone.get(flow.customer)
        if row is None or row["callback_at"] is None:
            continue
        receipts = [accepted.get(row["to_customer"]), accepted.get(row["to_merchant"])]
        if None not in receipts:
            last = max(r for r in receipts if r is not None)
            callback_to_receipts.append((last - row["callback_at"].timestamp()) * 1000)
    return {"tap_to_stk_ms": tap_to_stk, "callback_to_receipts_ms": callback_to_receipts}


async def _accepted_at(driver: Driver, flows: list[Flow]) -> dict[str, float]:
    """wamid → when the simulator accepted it, for the inboxes of these flows' phones."""
    phones = sorted({f.customer for f in flows} | {f.merchant for f in flows})
    accepted: dict[str, float] = {}
    limit = asyncio.Semaphore(16)

    async def read(phone: str) -> None:
        async with limit:
            items: list[dict[str, Any]] = await driver.control("GET", f"/phones/{phone}/inbox")
        for item in items:
            accepted[item["wamid"]] = _ts(item["at"])

    await asyncio.gather(*(read(phone) for phone in phones))
    return accepted


@dataclass
class CpuSample:
    ticks: dict[str, int]

    @classmethod
    def take(cls, pids: dict[str, int], *, everything: bool = False) -> CpuSample:
        """CPU time so far of our server processes; with `everything`, also this driver's
        process and the local PostgreSQL server's (all its processes, see `postgres_ticks`)."""
        ticks = {name: _ticks(pid) for name, pid in pids.items()}
        if everything:
            own = os.times()
            ticks["driver"] = round((own.user + own.system) * CLOCK_TICKS)
            postgres = postgres_ticks()
            if postgres is not None:
                ticks["postgres"] = postgres
        return cls(ticks)

    def ms_since(self, earlier: CpuSample) -> dict[str, float]:
        return {
            name: (value - earlier.ticks.get(name, 0)) * 1000 / CLOCK_TICKS
            for name, value in self.ticks.items()
        }

    def percent_since(self, earlier: CpuSample, seconds: float) -> dict[str, float]:
        return {
            name: round(100 * (value - earlier.ticks.get(name, 0)) / CLOCK_TICKS / seconds, 1)
            for name, value in self.ticks.items()
        }


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat from the command's name on: [0] name, [1] state,
    [2] ppid, [12] utime, [13] stime, [14] cutime, [15] cstime (clock ticks)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = text.partition(" (")[2].rpartition(")")
    return [name, *rest.split()] if rest else None


def _ticks(pid: int) -> int:
    fields = _stat(pid)
    if fields is None or len(fields) < 14:
        return 0
    return int(fields[12]) + int(fields[13])  # utime, stime


def postgres_ticks() -> int | None:
    """CPU time so far of the PostgreSQL servers on this machine, None when none runs here.

    Every live `postgres` process counts (backends, WAL writer, checkpointer…), and so does
    each server's postmaster's reaped children's time (`cutime`, `cstime`), where a backend's
    time goes when its connection closes. Other databases' work on the same server counts
    too: the benchmark assumes nothing else runs during it.
    """
    processes: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and fields[0] == "postgres" and len(fields) >= 16:
                processes[int(entry.name)] = fields
    if not processes:
        return None
    total = 0
    for fields in processes.values():
        total += int(fields[12]) + int(fields[13])
        if int(fields[2]) not in processes:  # a postmaster
            total += int(fields[14]) + int(fields[15])
    return total


async def served_requests(origin: str) -> int:
    """Requests the app has answered (its own /metrics), the scrapes themselves left out."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{origin}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match and 'route="/metrics"' not in match.group(1):
            total += float(match.group(2))
    return int(total)


async def provider_calls(db: asyncpg.Connection) -> int:
    """Provider requests the app made: attempts of the outbox jobs that call a provider."""
    async with db.transaction(readonly=True):
        value = await db.fetchval(
            "SELECT coalesce(sum(attempts), 0) FROM outbox_message WHERE topic = ANY($1::text[])",
            list(PROVIDER_TOPICS),
        )
    return int(value)


CHECK_SQL = """
SELECT i.customer_phone, i.status,
  count(p.id) AS attempts,
  count(p.id) FILTER (WHERE p.status = 'SUCCESS') AS successes,
  count(p.id) FILTER (WHERE p.needs_review) AS flagged,
  (SELECT count(*) FROM message_log m WHERE m.invoice_id = i.id AND m.direction = 'out'
    AND m.kind = 'receipt') AS customer_receipts,
  (SELECT count(*) FROM message_log m WHERE m.invoice_id = i.id AND m.direction = 'out'
    AND m.kind = 'payment_received') AS merchant_receipts
FROM invoice i LEFT JOIN payment p ON p.invoice_id = i.id
WHERE i.customer_phone = ANY($1::text[])
GROUP BY i.id
"""


DUE_GRACE_S = 5.0


async def check_flows(driver: Driver, db: asyncpg.Connection, flows: list[Flow]) -> dict[str, int]:
    """Counts of what went wrong; all zero when every flow was paid exactly once."""
    phones = [f.customer for f in flows]
    async with db.transaction(readonly=True):
        rows = await db.fetch(CHECK_SQL, phones)
        dead = await db.fetchval("SELECT count(*) FROM outbox_message WHERE status = 'dead'")
        initiated = await db.fetchval("SELECT count(*) FROM payment WHERE status = 'INITIATED'")
        # Due for a while, that is: a row that fell due in the last seconds (a reconcile job
        # scheduled RECONCILE_AFTER past its push, say) waits for the worker's next poll.
        due = await db.fetchval(
            "SELECT count(*) FROM outbox_message WHERE status IN ('pending', 'running')"
            " AND available_at <= now() - make_interval(secs => $1)",
            DUE_GRACE_S,
        )
    prompts: list[dict[str, Any]] = await driver.control("GET", "/mpesa/prompts")
    pushes: dict[str, int] = {}
    for prompt in prompts:
        pushes[prompt["phone"]] = pushes.get(prompt["phone"], 0) + 1
    invoices: dict[str, int] = {}
    for row in rows:
        invoices[row["customer_phone"]] = invoices.get(row["customer_phone"], 0) + 1
    return {
        "flows": len(flows),
        "flows_failed": sum(1 for f in flows if f.error is not None or f.done_at is None),
        "invoices_not_one": sum(1 for p in phones if invoices.get(p) != 1),
        "invoices_not_paid": sum(1 for r in rows if r["status"] != "PAID"),
        "payments_not_one_success": sum(1 for r in rows if r["successes"] != 1),
        "extra_attempts": sum(r["attempts"] - 1 for r in rows if r["attempts"] > 1),
        "stk_pushes_not_one": sum(1 for p in phones if pushes.get(p) != 1),
        "flagged_for_review": sum(r["flagged"] for r in rows),
        "customer_receipts_not_one": sum(1 for r in rows if r["customer_receipts"] != 1),
        "merchant_receipts_not_one": sum(1 for r in rows if r["merchant_receipts"] != 1),
        "payments_initiated": int(initiated),
        "outbox_dead": int(dead),
        "outbox_due_left": int(due),
    }
