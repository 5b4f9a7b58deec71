"""Benchmark 1, webhook ingest: unique `help` webhooks at one `serve --no-worker` process.

wrk (bench/webhook.lua) posts for a fixed time with fixed concurrency, first at the app, then
at the bare FastAPI app (bench/bare_app.py) served with the same uvicorn settings; the ratio
of their throughputs is the headline. The app runs without its worker, so the figure is the
webhook path alone (check, parse, store the event and queue its handling, commit), not the
handling and the reply that follow in the worker. Afterwards the database must hold every
answered webhook exactly once, each with its handling queued once, and no dead outbox row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench import stack
from bench.measure import CpuSample
from bench.report import Results, progress

LUA = Path(__file__).resolve().parent / "webhook.lua"
WEBHOOK = "/whatsapp/webhook"


@dataclass(frozen=True)
class IngestOptions:
    duration_s: int = 15
    warmup_s: int = 3
    connections: int = 32
    threads: int = 2
    rounds: int = 1


@dataclass(frozen=True)
class WrkRun:
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms: float = 0.0  # CPU time of the server process during the run

    @property
    def cpu_us_per_request(self) -> float:
        return 1000 * self.cpu_ms / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def answered_ok(self) -> int:
        return self.requests - self.non_2xx


async def wrk(
    origin: str, label: str, seconds: int, options: IngestOptions, pid: int | None = None
) -> WrkRun:
    """One wrk run at `origin`'s webhook, with a progress line every few seconds; with `pid`,
    the CPU time that server process used meanwhile (a figure other load hardly moves)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    argv = [
        "wrk",
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        origin + WEBHOOK,
        "--",
        f"{label}-{uuid.uuid4().hex[:8]}",
        stack.WEBHOOK_SECRET,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    ticker = asyncio.create_task(_tick(label, seconds))
    before = CpuSample.take({"server": pid}) if pid else None
    try:
        out, err = await process.communicate()
    finally:
        ticker.cancel()
    run = _parse(out.decode(), err.decode(), process.returncode)
    if before is not None and pid:
        cpu_ms = CpuSample.take({"server": pid}).ms_since(before)["server"]
        run = dataclasses.replace(run, cpu_ms=cpu_ms)
    return run


async def _tick(label: str, seconds: int) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(5)
        progress(f"  {label}: {time.monotonic() - started:.0f}/{seconds} s")


def _parse(out: str, err: str, returncode: int | None) -> WrkRun:
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({returncode}): {err.strip() or out.strip()}")
    figures: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors, latency = figures["errors"], figures["latency_us"]
    return WrkRun(
        requests=figures["requests"],
        duration_s=figures["duration_us"] / 1e6,
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
    )


async def run_ingest(results: Results, run_dir: Path, options: IngestOptions) -> None:
    progress("ingest: fresh database, app (serve --no-worker) and bare app")
    dsn = await stack.fresh_database()
    servers = stack.Stack(run_dir)
    ours: list[WrkRun] = []
    bare: list[WrkRun] = []
    try:
        app_port, bare_port = stack.free_port(), stack.free_port()
        app = await servers.start(
            "app",
            stack.invoiceiq("serve", "--no-worker", "--port", str(app_port)),
            stack.app_env(dsn, app_port, None),
            port=app_port,
            ready_path="/readyz",
        )
        baseline = await servers.start(
            "bare",
            stack.python(str(stack.REPO / "bench" / "bare_app.py"), "--port", str(bare_port)),
            stack.base_env(),
            port=bare_port,
            ready_path="/healthz",
        )
        progress(f"ingest: warm-up {options.warmup_s} s each")
        warm = [await wrk(app.origin, "warm-ours", options.warmup_s, options)]
        await wrk(baseline.origin, "warm-bare", options.warmup_s, options)
        for round_no in range(1, options.rounds + 1):
            tag = f"round {round_no}/{options.rounds}: " if options.rounds > 1 else ""
            progress(f"ingest: {tag}ours, {options.duration_s} s at {options.connections} conns")
            ours.append(await wrk(app.origin, "ours", options.duration_s, options, app.pid))
            progress(f"ingest: {tag}bare, {options.duration_s} s at {options.connections} conns")
            bare.append(
                await wrk(baseline.origin, "bare", options.duration_s, options, baseline.pid)
            )
        await asyncio.sleep(1)  # requests cut off by wrk's stop finish server-side
        rss = servers.peak_rss()
    finally:
        await servers.stop()
    _record(results, options, ours, bare, rss)
    await _check(results, dsn, warm + ours, options)


def _median_run(runs: list[WrkRun]) -> WrkRun:
    by_rps = sorted(runs, key=lambda r: r.rps)
    return by_rps[(len(by_rps) - 1) // 2]


def _record(
    results: Results,
    options: IngestOptions,
    ours: list[WrkRun],
    bare: list[WrkRun],
    rss: dict[str, float | None],
) -> None:
    results.set("ingest.connections", options.connections, "wrk connections (loopback)")
    results.set("ingest.duration_s", options.duration_s, "s per measured run")
    results.set("ingest.rounds", options.rounds, "ours/bare pairs; the median pair is shown")
    for name, runs in (("ours", ours), ("bare", bare)):
        run = _median_run(runs)
        results.set(f"ingest.{name}.requests_per_s", round(run.rps, 1), "req/s")
        results.set(f"ingest.{name}.p50_ms", run.p50_ms, "ms")
        results.set(f"ingest.{name}.p99_ms", run.p99_ms, "ms")
        results.set(f"ingest.{name}.max_ms", run.max_ms, "ms")
        results.set(
            f"ingest.{name}.cpu_us_per_request",
            round(run.cpu_us_per_request),
            "µs of the server's CPU per request",
        )
        results.set(f"ingest.{name}.non_2xx", sum(r.non_2xx for r in runs), "responses")
        results.set(f"ingest.{name}.socket_errors", sum(r.socket_errors for r in runs), "")
        if len(runs) > 1:
            results.set(
                f"ingest.{name}.requests_per_s_all", [round(r.rps, 1) for r in runs], "req/s"
            )
    ratio = statistics.median(o.rps / b.rps for o, b in zip(ours, bare, strict=True))
    results.set("ingest.ratio_vs_bare", round(ratio, 3), "ours/bare throughput (goal ≥ 0.5)")
    results.set(
        "ingest.p99_goal_met", _median_run(ours).p99_ms <= 50, "p99 ≤ 50 ms at 32 connections"
    )
    results.set("ingest.peak_rss_mb.app", rss.get("app"), "MiB")
    results.set("ingest.peak_rss_mb.bare", rss.get("bare"), "MiB")


async def _check(results: Results, dsn: str, runs: list[WrkRun], options: IngestOptions) -> None:
    """Every webhook answered 200 is stored once, with one reply queued; nothing dead."""
    answered = sum(r.answered_ok for r in runs)
    # wrk stops with requests in flight: the server may finish up to one per connection per run.
    slack = options.connections * len(runs)
    connection = await asyncpg.connect(dsn)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM inbox_event WHERE source = 'whatsapp'"
        )
        queued = await connection.fetchval(
            "SELECT count(*) FROM outbox_message WHERE topic = 'whatsapp.inbound'"
        )
        queued_once = await connection.fetchval(
            "SELECT count(DISTINCT payload->>'wamid') FROM outbox_message"
            " WHERE topic = 'whatsapp.inbound'"
        )
        dead = await connection.fetchval(
            "SELECT count(*) FROM outbox_message WHERE status = 'dead'"
        )
    finally:
        await connection.close()
    errors = sum(r.non_2xx + r.socket_errors for r in runs)
    stored_ok = answered <= stored <= answered + slack
    results.set("ingest.check.webhooks_answered_200", answered, "")
    results.set("ingest.check.webhooks_stored", stored, "inbox rows")
    results.set("ingest.check.handling_queued", queued, "whatsapp.inbound outbox rows")
    results.set("ingest.check.dead_outbox_rows", dead, "")
    ok = stored_ok and queued == queued_once == stored and dead == 0 and errors == 0
    results.set(
        "ingest.check.passed", ok, "each answered webhook stored once, its handling queued once"
    )
