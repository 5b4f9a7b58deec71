"""The app as real processes, as deployed: `serve --no-worker`, `worker`s and a standalone
simulator, with a chaos task that SIGKILLs `serve` and the workers at random and restarts them.

The simulator is never killed: it stands for WhatsApp and Safaricom, which keep running. Each
process logs to its own file in the test's directory, so a failure can be read back.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from invoiceiq.config import Settings
from support.app_server import bind_free_port
from support.servers import LOOPBACK

STARTUP = 60.0  # seconds for a process to import, migrate and listen on a loaded machine


def free_port() -> int:
    with bind_free_port() as sock:
        port: int = sock.getsockname()[1]
    return port


def clean_environment(**settings: Any) -> dict[str, str]:
    """This process's environment without any InvoiceIQ setting, plus `settings`."""
    fields = set(Settings.model_fields)
    env = {name: value for name, value in os.environ.items() if name.lower() not in fields}
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


@dataclass
class Managed:
    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    starts: int = 0

    def start(self, cwd: Path) -> None:
        self.log = self.log or self.log_path.open("ab")
        self.log.write(f"--- start {self.starts + 1} ---\n".encode())
        self.log.flush()
        self.process = subprocess.Popen(
            self.argv, env=dict(self.env), cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"{self.name}:\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class ProcessStack:
    """`serve` on `app_port`, `workers` workers, the simulator on `sim_port`."""

    directory: Path
    database_url: str
    timings: Mapping[str, Any]
    workers: int = 2
    app_port: int = field(default_factory=free_port)
    sim_port: int = field(default_factory=free_port)
    processes: dict[str, Managed] = field(default_factory=dict)
    kills: list[tuple[str, datetime]] = field(default_factory=list)

    @property
    def app_origin(self) -> str:
        return f"http://{LOOPBACK}:{self.app_port}"

    @property
    def sim_origin(self) -> str:
        return f"http://{LOOPBACK}:{self.sim_port}"

    def _env(self) -> dict[str, str]:
        simulator = f"{self.sim_origin}/simulator"
        return clean_environment(
            database_url=self.database_url,
            base_url=self.app_origin,
            simulator="false",
            whatsapp_api_url=f"{simulator}/whatsapp",
            mpesa_api_url=f"{simulator}/daraja",
            **self.timings,
        )

    def _define(self) -> None:
        python = [sys.executable, "-m", "invoiceiq"]
        env = self._env()
        sim_env = clean_environment(
            base_url=self.app_origin, customer_window=self.timings["customer_window"]
        )
        specs = {
            "simulator": (["simulator", "--port", str(self.sim_port)], sim_env),
            "serve": (["serve", "--no-worker", "--port", str(self.app_port)], env),
        }
        for n in range(self.workers):
            specs[f"worker-{n}"] = (["worker"], env)
        for name, (args, environment) in specs.items():
            log_path = self.directory / f"{name}.log"
            self.processes[name] = Managed(name, python + args, environment, log_path)

    async def start(self) -> None:
        self._define()
        for managed in self.processes.values():
            managed.start(self.directory)
        await self._ready(f"{self.sim_origin}/simulator/config")
        await self._ready(f"{self.app_origin}/healthz")

    async def _ready(self, url: str) -> None:
        async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(STARTUP):
            while True:
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)

    async def chaos(self, stop: asyncio.Event, *, seed: int, every: tuple[float, float]) -> None:
        """Until `stop`: wait a random while, SIGKILL `serve` or a worker, restart it."""
        dice = random.Random(seed)
        victims = [name for name in self.processes if name != "simulator"]
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), dice.uniform(*every))
                return
            except TimeoutError:
                pass
            name = dice.choice(victims)
            victim = self.processes[name]
            victim.kill()
            self.kills.append((name, datetime.now(UTC)))
            await asyncio.sleep(dice.uniform(0, 1))
            victim.start(self.directory)
            if name == "serve":
                await self._ready(f"{self.app_origin}/healthz")

    def stop(self) -> None:
        for managed in self.processes.values():
            managed.kill()
            if managed.log is not None:
                managed.log.close()

    def tails(self) -> str:
        return "\n".join(managed.tail() for managed in self.processes.values())
