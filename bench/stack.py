"""What a benchmark runs against: a fresh PostgreSQL database and servers in their own processes.

Every server is started here, on a free loopback port, with its output in the run's log
folder, and stopped by its own process id. Peak memory is read from the kernel (`VmHWM`, the
high-water mark of the resident set), so it needs no sampling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
# The server a benchmark creates its database on (the test suite's server).
ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = os.environ.get("BENCH_DATABASE", "invoiceiq_bench")
WEBHOOK_SECRET = "dev-webhook-secret"  # the development default; loopback only
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def dsn_for(database: str) -> str:
    """The admin DSN with another database name."""
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def fresh_database(name: str = DATABASE) -> str:
    """Drop and create `name`; its asyncpg DSN."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return dsn_for(name)


async def drop_database(name: str = DATABASE) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def commits(name: str = DATABASE) -> int:
    """Committed transactions of database `name` so far (pg_stat_database.xact_commit).

    Read from the admin database, so the reading itself is not counted.
    """
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await connection.close()
    return int(value or 0)


async def server_version() -> str:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        version: str = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return version


def sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@dataclass
class Server:
    name: str
    process: asyncio.subprocess.Process
    origin: str
    log: Path
    peak_rss_mb: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_peak_rss(self) -> float | None:
        """The process's peak resident memory in MiB, kept once read (it survives a stop)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return self.peak_rss_mb
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_mb = round(int(line.split()[1]) / 1024, 1)
        return self.peak_rss_mb

    async def stop(self) -> None:
        self.read_peak_rss()
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


@dataclass
class Stack:
    """The servers of one benchmark, stopped together (in reverse order of start)."""

    run_dir: Path
    servers: list[Server] = field(default_factory=list)

    async def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        port: int,
        ready_path: str,
    ) -> Server:
        """A server on `port`: ready when `ready_path` answers 200."""
        server = await self._spawn(name, argv, env, f"http://{LOOPBACK}:{port}")
        await _wait_ready(server, ready_path)
        return server

    async def start_worker(self, name: str, argv: list[str], env: dict[str, str]) -> Server:
        """A process without a port (`invoiceiq worker`): ready when its log says so."""
        server = await self._spawn(name, argv, env, "")
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"worker started" not in server.log.read_bytes():
            if server.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {server.log}")
            await asyncio.sleep(0.1)
        return server

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str], origin: str) -> Server:
        log = self.run_dir / f"{name}.log"
        handle = log.open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.run_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        finally:
            handle.close()
        server = Server(name, process, origin, log)
        self.servers.append(server)
        return server

    async def stop(self) -> None:
        for server in reversed(self.servers):
            await server.stop()

    def peak_rss(self) -> dict[str, float | None]:
        return {server.name: server.read_peak_rss() for server in self.servers}


async def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if server.process.returncode is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.process.returncode}; see {server.log}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(server.origin + path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer {path} in {START_TIMEOUT_S:.0f} s")


def base_env(**values: Any) -> dict[str, str]:
    """This environment with the app's settings replaced (nothing inherited from a .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update({key.upper(): str(value) for key, value in values.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


_SETTING_PREFIXES = (
    "DATABASE_URL",
    "BASE_URL",
    "SIMULATOR",
    "WHATSAPP_",
    "MPESA_",
    "ENVIRONMENT",
    "MERCHANT_SIGNUP",
    "TRUSTED_PROXIES",
    "METRICS_TOKEN",
)


def app_env(dsn: str, app_port: int, simulator_port: int | None, **extra: Any) -> dict[str, str]:
    """Settings of an app (or worker) that talks to a simulator in its own process."""
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": sqlalchemy_url(dsn),
        "base_url": f"http://{LOOPBACK}:{app_port}",
        "simulator": "false",
        "mpesa_confirm_callbacks": "true",
    }
    if simulator_port is not None:
        sim = f"http://{LOOPBACK}:{simulator_port}/simulator"
        values["whatsapp_api_url"] = f"{sim}/whatsapp"
        values["mpesa_api_url"] = f"{sim}/daraja"
    else:  # the ingest server calls no provider; settings still need a Daraja to name
        values["mpesa_environment"] = "sandbox"
    values.update(extra)
    return base_env(**values)


def invoiceiq(*args: str) -> list[str]:
    return [str(BIN / "invoiceiq"), *args]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
