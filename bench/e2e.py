"""Benchmark 2, end to end: complete flows at increasing rates until completions fall behind.

Processes: the simulator (`invoiceiq simulator`), the app (`invoiceiq serve`, its worker in
process; `--split-worker`: `serve --no-worker` plus `invoiceiq worker`), PostgreSQL, and this
driver. The simulator's webhook is pointed at the app by `invoiceiq whatsapp register-webhook`,
and its config (`PUT /simulator/config`) accepts every PIN prompt after `answer_delay_ms`.
Each step offers flows at a fixed rate for `step_s` seconds (open loop: a new flow starts on
schedule whether or not earlier ones finished), then waits for them all. A step is sustained
when every flow completed and completions kept pace: (completions - 1) / (last - first
completion time) ≥ 95 % of the offered rate. The run stops at the first step that is not.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench import stack
from bench.flows import Driver, Flow, Tracker, customer_phone, merchant_phone, pending
from bench.ingest import IngestOptions, wrk
from bench.measure import (
    CpuSample,
    check_flows,
    latencies,
    percentile,
    provider_calls,
    served_requests,
)
from bench.report import Results, progress
from invoiceiq.kit.http import make_http_client

KEEP_UP = 0.95
# A step stops offering flows once this many seconds' worth of them are in flight.
MAX_BACKLOG_S = 20
STATS_SETTLE_S = 11  # PostgreSQL flushes an idle backend's counters within 10 s
# The HTTP exchange measurement: requests through the app's own client, and how many at once.
EXCHANGES = 3000
EXCHANGES_AT_ONCE = 8


@dataclass(frozen=True)
class E2eOptions:
    step_s: int = 20
    rates: tuple[float, ...] = (2, 4, 8)
    answer_delay_ms: int = 500
    merchants: int = 20
    split_worker: bool = False
    bare_requests_per_s: float | None = None
    warmup_rate: float = 2
    warmup_s: int = 5


@dataclass
class Step:
    rate: float
    flows: list[Flow]
    issued_s: float
    cpu_percent: dict[str, float]
    overloaded: bool

    @property
    def completed(self) -> list[Flow]:
        return [f for f in self.flows if f.done_at is not None]

    @property
    def completions_per_s(self) -> float:
        times = sorted(f.done_at for f in self.flows if f.done_at is not None)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    @property
    def sustained(self) -> bool:
        all_done = len(self.completed) == len(self.flows) and not self.overloaded
        return all_done and self.completions_per_s >= KEEP_UP * self.rate


class Bench:
    """One e2e run: its servers, driver and counters."""

    def __init__(self, options: E2eOptions, run_dir: Path) -> None:
        self.options = options
        self.servers = stack.Stack(run_dir)
        self.next_index = 0
        self.own_transactions = 0

    async def start(self, dsn: str) -> None:
        sim_port, app_port = stack.free_port(), stack.free_port()
        origin = f"http://{stack.LOOPBACK}:{app_port}"
        self.simulator = await self.servers.start(
            "simulator",
            stack.invoiceiq("simulator", "--port", str(sim_port)),
            stack.base_env(base_url=origin),
            port=sim_port,
            ready_path="/simulator/config",
        )
        env = stack.app_env(dsn, app_port, sim_port)
        serve = ["serve", "--port", str(app_port)]
        if self.options.split_worker:
            serve.append("--no-worker")
        self.app = await self.servers.start(
            "app", stack.invoiceiq(*serve), env, port=app_port, ready_path="/readyz"
        )
        if self.options.split_worker:
            await self.servers.start_worker("worker", stack.invoiceiq("worker"), env)
        register = await asyncio.create_subprocess_exec(
            *stack.invoiceiq("whatsapp", "register-webhook"),
            env=env,
            cwd=self.servers.run_dir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await register.communicate()
        if register.returncode != 0:
            raise RuntimeError(f"register-webhook failed: {err.decode().strip()}")
        progress(f"e2e: {out.decode().strip()}")

    def pids(self) -> dict[str, int]:
        return {server.name: server.pid for server in self.servers.servers}

    async def configure(self, driver: Driver) -> None:
        auto = {"default": "accept", "delay_ms": self.options.answer_delay_ms}
        await driver.control("PUT", "/config", json={"seed": 1, "auto_answer": auto})
        for k in range(self.options.merchants):
            status = await driver.write(merchant_phone(k), {"text": f"name Bench Shop {k}"})
            if status != 200:
                raise RuntimeError(f"merchant sign-up answered {status}")

    def new_flow(self) -> Flow:
        index = self.next_index
        self.next_index += 1
        merchant = merchant_phone(index % self.options.merchants)
        return Flow(index=index, merchant=merchant, customer=customer_phone(index))

    async def step(self, driver: Driver, rate: float, seconds: float) -> Step:
        flows: list[Flow] = []
        tasks: list[asyncio.Task[None]] = []
        count = max(2, round(rate * seconds))
        before = CpuSample.take(self.pids(), everything=True)
        started = time.monotonic()
        reporter = asyncio.create_task(_report_progress(rate, flows, started))
        overloaded = False
        try:
            for i in range(count):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                if pending(flows) > rate * MAX_BACKLOG_S:
                    overloaded = True
                    break
                flow = self.new_flow()
                flows.append(flow)
                tasks.append(asyncio.create_task(driver.run(flow)))
            issued = time.monotonic() - started
            cpu = CpuSample.take(self.pids(), everything=True).percent_since(before, issued)
            await asyncio.gather(*tasks)
        finally:
            reporter.cancel()
        return Step(rate, flows, issued, cpu, overloaded)


async def _report_progress(rate: float, flows: list[Flow], started: float) -> None:
    while True:
        await asyncio.sleep(2)
        done = sum(1 for f in flows if f.done_at is not None)
        failed = sum(1 for f in flows if f.error is not None)
        progress(
            f"  {rate:g} flows/s, {time.monotonic() - started:4.0f} s: started {len(flows)}, "
            f"completed {done}, in flight {pending(flows)}, failed {failed}"
        )


@dataclass(frozen=True)
class Baseline:
    requests_per_s: float | None
    client_us: float  # this process's CPU per exchange: the client
    server_us: float  # the bare app's CPU per exchange


async def bare_baseline(run_dir: Path, *, measure_rps: bool) -> Baseline:
    """What one HTTP exchange costs, measured against the bare app, with its requests/s (for
    the bound) when the ingest benchmark did not measure them before."""
    servers = stack.Stack(run_dir)
    port = stack.free_port()
    try:
        bare = await servers.start(
            "bare",
            stack.python(str(stack.REPO / "bench" / "bare_app.py"), "--port", str(port)),
            stack.base_env(),
            port=port,
            ready_path="/healthz",
        )
        rps = None
        if measure_rps:
            options = IngestOptions(duration_s=10)
            await wrk(bare.origin, "warm-bare", options.warmup_s, options)
            rps = (await wrk(bare.origin, "bare", options.duration_s, options)).rps
        client_us, server_us = await _exchange_cost(bare.origin, bare.pid)
        return Baseline(rps, client_us, server_us)
    finally:
        await servers.stop()


async def _exchange_cost(origin: str, pid: int) -> tuple[float, float]:
    """CPU µs per request, for the client and for the server, of webhooks POSTed to the bare
    app through `make_http_client` (the client the app's provider calls and the simulator's
    webhooks go through), a few at a time as they are in a flow. This process does nothing
    else meanwhile, so its CPU time is the client's."""
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"statuses": []}}]}],
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    url = f"{origin}/whatsapp/webhook"
    limit = asyncio.Semaphore(EXCHANGES_AT_ONCE)
    async with make_http_client() as http:

        async def one() -> None:
            async with limit:
                answer = await http.post(url, content=body, headers=headers)
                answer.raise_for_status()

        await asyncio.gather(*(one() for _ in range(EXCHANGES // 10)))  # warm-up
        server = CpuSample.take({"bare": pid})
        client = time.process_time()
        await asyncio.gather(*(one() for _ in range(EXCHANGES)))
        client_ms = (time.process_time() - client) * 1000
        server_ms = CpuSample.take({"bare": pid}).ms_since(server)["bare"]
    return client_ms * 1000 / EXCHANGES, server_ms * 1000 / EXCHANGES


async def run_e2e(results: Results, run_dir: Path, options: E2eOptions) -> None:
    measure_rps = options.bare_requests_per_s is None
    progress(
        "e2e: the bare app: what an HTTP exchange costs"
        + (", and its requests/s for the bound (10 s)" if measure_rps else "")
    )
    baseline = await bare_baseline(run_dir, measure_rps=measure_rps)
    bare_rps = baseline.requests_per_s or options.bare_requests_per_s
    assert bare_rps is not None
    progress("e2e: fresh database, simulator, app" + (", worker" if options.split_worker else ""))
    dsn = await stack.fresh_database()
    bench = Bench(options, run_dir)
    try:
        await bench.start(dsn)
        await _drive(bench, dsn, results, bare_rps, baseline)
    finally:
        await bench.servers.stop()
    for name, rss in bench.servers.peak_rss().items():
        results.set(f"e2e.peak_rss_mb.{name}", rss, "MiB")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.set("e2e.peak_rss_mb.driver", round(own, 1), "MiB (this benchmark process)")


async def _drive(
    bench: Bench, dsn: str, results: Results, bare_rps: float, baseline: Baseline
) -> None:
    options = bench.options
    db = await asyncpg.connect(dsn)
    async with Tracker(dsn) as tracker:
        driver = Driver(bench.simulator.origin, tracker)
        try:
            await bench.configure(driver)
            progress(f"e2e: warm-up, {options.warmup_rate:g} flows/s for {options.warmup_s} s")
            warm = await bench.step(driver, options.warmup_rate, options.warmup_s)
            progress(f"e2e: waiting {STATS_SETTLE_S} s for PostgreSQL's counters to settle")
            await asyncio.sleep(STATS_SETTLE_S)
            span = await _counters(bench, tracker, db)
            steps = await _steps(bench, driver, db, results)
            await asyncio.sleep(STATS_SETTLE_S)
            end = await _counters(bench, tracker, db)
            flows = warm.flows + [f for s in steps for f in s.flows]
            checks = await check_flows(driver, db, flows)
        finally:
            await driver.aclose()
            await db.close()
    measured = sum(len(s.completed) for s in steps)
    _record_costs(results, span, end, measured, bare_rps)
    _record_ceilings(results, baseline)
    _record_checks(results, checks)


async def _counters(bench: Bench, tracker: Tracker, db: asyncpg.Connection) -> dict[str, Any]:
    """Counters at one moment; `own` is the transactions this driver ran on the database
    (each counted in xact_commit, so subtracted from it)."""
    bench.own_transactions += 1
    return {
        "commits": await stack.commits(),
        "served": await served_requests(bench.app.origin),
        "made": await provider_calls(db),
        "own": tracker.transactions + bench.own_transactions,
        "cpu": CpuSample.take(bench.pids(), everything=True),
    }


async def _steps(
    bench: Bench, driver: Driver, db: asyncpg.Connection, results: Results
) -> list[Step]:
    steps: list[Step] = []
    best: tuple[Step, dict[str, Any]] | None = None
    for rate in bench.options.rates:
        progress(f"e2e: step at {rate:g} flows/s for {bench.options.step_s} s")
        step = await bench.step(driver, rate, bench.options.step_s)
        steps.append(step)
        lat = await latencies(driver, db, step.flows)
        bench.own_transactions += 1
        summary = _summarise(step, lat)
        verdict = "sustained" if step.sustained else "NOT sustained"
        progress(
            f"e2e: {rate:g} flows/s offered → {summary['completions_per_s']} completed/s, "
            f"p99 flow {summary['flow_p99_s']} s, {verdict}; CPU % {step.cpu_percent}"
        )
        results.data.setdefault("e2e", {}).setdefault("steps", []).append(summary)
        if not step.sustained:
            break
        best = (step, summary)
        await _wait_quiet(db)
        bench.own_transactions += 1
    if best is not None:
        step, summary = best
        results.set("e2e.flows_per_s", summary["completions_per_s"], "highest sustained")
        results.set("e2e.offered_flows_per_s", step.rate, "offered at that step")
        for key in ("tap_to_stk", "callback_to_receipts", "flow"):
            unit = "s" if key == "flow" else "ms"
            for q in ("p50", "p99"):
                name = f"{key}_{q}_{unit}"
                results.set(f"e2e.{name}", summary[name], f"{unit}, at the sustained rate")
        results.set("e2e.cpu_percent", summary["cpu_percent"], "% of one core, by process")
    else:
        results.set("e2e.flows_per_s", 0.0, "no step was sustained")
    return steps


async def _wait_quiet(db: asyncpg.Connection, limit_s: float = 60) -> None:
    """Let the outbox drain (statuses of the last receipts, say) before the next step."""
    deadline = time.monotonic() + limit_s
    async with db.transaction(readonly=True):
        while time.monotonic() < deadline:
            busy = await db.fetchval(
                "SELECT count(*) FROM outbox_message WHERE status = 'running'"
                " OR (status = 'pending' AND available_at <= now())"
            )
            if not busy:
                return
            await asyncio.sleep(0.2)


def _summarise(step: Step, lat: dict[str, Any]) -> dict[str, Any]:
    durations = [f.duration_s for f in step.flows if f.duration_s is not None]
    return {
        "offered_flows_per_s": step.rate,
        "flows": len(step.flows),
        "completed": len(step.completed),
        "failed": sum(1 for f in step.flows if f.error is not None),
        "completions_per_s": round(step.completions_per_s, 1),
        "sustained": step.sustained,
        "tap_to_stk_p50_ms": percentile(lat["tap_to_stk_ms"], 50),
        "tap_to_stk_p99_ms": percentile(lat["tap_to_stk_ms"], 99),
        "callback_to_receipts_p50_ms": percentile(lat["callback_to_receipts_ms"], 50),
        "callback_to_receipts_p99_ms": percentile(lat["callback_to_receipts_ms"], 99),
        "flow_p50_s": percentile(durations, 50),
        "flow_p99_s": percentile(durations, 99),
        "cpu_percent": step.cpu_percent,
    }


def _record_costs(
    results: Results,
    start: dict[str, Any],
    end: dict[str, Any],
    flows: int,
    bare_rps: float,
) -> None:
    if flows == 0:
        return
    served = (end["served"] - start["served"]) / flows
    made = (end["made"] - start["made"]) / flows
    own = end["own"] - start["own"]
    commits = (end["commits"] - start["commits"] - own) / flows
    per_flow = served + made
    bound = bare_rps / per_flow
    best = results.get("e2e.flows_per_s") or 0.0
    results.set("e2e.http_requests_per_flow", round(per_flow, 2), "served + made by the app")
    results.set("e2e.http_served_per_flow", round(served, 2), "webhooks and callbacks")
    results.set("e2e.http_made_per_flow", round(made, 2), "WhatsApp sends, STK push/query")
    results.set("e2e.commits_per_flow", round(commits, 2), "pg_stat_database xact_commit")
    cpu = end["cpu"].ms_since(start["cpu"])
    for name, ms in cpu.items():
        results.set(f"e2e.cpu_ms_per_flow.{name}", round(ms / flows, 1), "CPU ms per flow")
    results.set("e2e.bare_requests_per_s", round(bare_rps, 1), "req/s (from ingest)")
    results.set("e2e.bound_flows_per_s", round(bound, 1), "bare req/s ÷ HTTP requests per flow")
    results.set("e2e.fraction_of_bound", round(best / bound, 3), "goal ≥ 0.3")
    results.set("e2e.goal_100_flows_per_s_met", best >= 100, "")


def _record_ceilings(results: Results, baseline: Baseline) -> None:
    """The rates at which this machine's cores would be full: with this run's CPU per flow,
    and if the app and the simulator did nothing but their HTTP exchanges."""
    cores = os.cpu_count() or 1
    per_flow: dict[str, float] = results.get("e2e.cpu_ms_per_flow") or {}
    exchanges = results.get("e2e.http_requests_per_flow")
    if not per_flow or not exchanges:
        return
    total = sum(per_flow.values())
    results.set("e2e.cpu_ms_per_flow_total", round(total, 1), "CPU ms per flow, every process")
    results.set(
        "e2e.cpu_ceiling_flows_per_s",
        round(cores * 1000 / total, 1),
        f"{cores} cores ÷ that total",
    )
    exchange = baseline.client_us + baseline.server_us
    results.set("e2e.http_exchange_cpu_us.client", round(baseline.client_us), "µs (httpx)")
    results.set("e2e.http_exchange_cpu_us.server", round(baseline.server_us), "µs (bare app)")
    results.set(
        "e2e.http_floor_flows_per_s",
        round(cores * 1e6 / (exchange * exchanges), 1),
        "cores full with HTTP exchanges alone",
    )


def _record_checks(results: Results, checks: dict[str, int]) -> None:
    for key, value in checks.items():
        results.set(f"e2e.check.{key}", value, "")
    problems = {k: v for k, v in checks.items() if k != "flows" and v}
    results.set("e2e.check.passed", not problems, "every flow paid exactly once, nothing dead")
