"""Run the benchmarks, print their tables and write bench/results/latest.json.

    python -m bench                 # both (what `make bench` runs)
    python -m bench ingest          # webhook ingest only
    python -m bench e2e             # end to end only (measures its own bare baseline)

Durations and rates have options (`--help`); the defaults are the figures in the README.
Exit status 1 when a self-check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from bench import stack
from bench.e2e import E2eOptions, run_e2e
from bench.ingest import IngestOptions, run_ingest
from bench.report import RESULTS_DIR, Results, machine, progress

STEP_COLUMNS = [
    "offered_flows_per_s",
    "completions_per_s",
    "sustained",
    "flows",
    "failed",
    "flow_p50_s",
    "flow_p99_s",
    "tap_to_stk_p99_ms",
    "callback_to_receipts_p99_ms",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="?", choices=["all", "ingest", "e2e"], default="all")
    parser.add_argument("--duration", type=int, default=15, help="ingest: seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="ingest: wrk connections")
    parser.add_argument("--rounds", type=int, default=3, help="ingest: ours/bare pairs")
    parser.add_argument("--step", type=int, default=20, help="e2e: seconds per rate step")
    parser.add_argument(
        "--rates",
        default="1,2,3,4,6,8,10,13,16,20,25,30,40,50,65,80,100,125,150",
        help="e2e: flows/s to try, in order, until one is not sustained",
    )
    parser.add_argument("--answer-delay-ms", type=int, default=500, help="e2e: PIN entry time")
    parser.add_argument("--merchants", type=int, default=20, help="e2e: merchants sharing flows")
    parser.add_argument(
        "--split-worker",
        action="store_true",
        help="e2e: `serve --no-worker` plus a separate `invoiceiq worker` process",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.exit(asyncio.run(_main(args)))


async def _main(args: argparse.Namespace) -> int:
    results = Results()
    info = machine()
    for key, value in info.items():
        results.set(f"machine.{key}", value)
    results.set("machine.postgres", await stack.server_version())
    results.set("machine.loadavg_1m_at_start", round(os.getloadavg()[0], 2), "others' load")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="invoiceiq-bench-"))
    progress(f"logs of the servers in {run_dir}")
    tables: list[str] = []
    if args.which in ("all", "ingest"):
        options = IngestOptions(
            duration_s=args.duration, connections=args.connections, rounds=args.rounds
        )
        await run_ingest(results, run_dir, options)
        tables.append(results.table("ingest", "Webhook ingest (wrk, loopback)"))
        print("\n" + tables[-1] + "\n", flush=True)
        results.write()
    if args.which in ("all", "e2e"):
        e2e_options = E2eOptions(
            step_s=args.step,
            rates=tuple(float(x) for x in args.rates.split(",")),
            answer_delay_ms=args.answer_delay_ms,
            merchants=args.merchants,
            split_worker=args.split_worker,
            bare_requests_per_s=results.get("ingest.bare.requests_per_s"),
        )
        await run_e2e(results, run_dir, e2e_options)
        steps = results.rows_table("e2e.steps", STEP_COLUMNS)
        tables.append(results.table("e2e", "End to end (flows through app and simulator)"))
        tables[-1] += "\n" + steps
        print("\n" + tables[-1] + "\n", flush=True)
    results.set("machine.loadavg_1m_at_end", round(os.getloadavg()[0], 2), "")
    print(results.table("machine", "Machine"))
    path = results.write()
    print("\n\n".join(["", *tables]))
    checks = [results.get(f"{name}.check.passed") for name in ("ingest", "e2e")]
    failed = [c for c in checks if c is False]
    print(f"\nfigures written to {path}")
    print("self-checks: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0
