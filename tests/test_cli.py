"""The `invoiceiq` command, run as a real process: migrate, refuse bad settings, serve, stop."""

from __future__ import annotations

import gc
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import make_settings
from invoiceiq import cli
from invoiceiq.cli import freeze_startup_objects, uvicorn_config
from invoiceiq.config import Settings
from invoiceiq.main import create_app

# Generous: a loaded CI machine may take a while to import, migrate and bind.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def cli_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any InvoiceIQ setting, plus `settings`."""
    fields = set(Settings.model_fields)
    env = {name: value for name, value in os.environ.items() if name.lower() not in fields}
    env.update({name.upper(): value for name, value in settings.items()})
    return env


def invoiceiq(
    *args: str, cwd: Path, timeout: float = 120, **settings: str
) -> subprocess.CompletedProcess[str]:
    # cwd is a temporary directory, so no .env of the developer's is read.
    return subprocess.run(
        [sys.executable, "-m", "invoiceiq", *args],
        cwd=cwd,
        env=cli_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


def test_db_upgrade_creates_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    result = invoiceiq("db", "upgrade", cwd=tmp_path, database_url=f"sqlite+aiosqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert "latest migration" in result.stdout
    assert {"alembic_version", "outbox_message", "invoice", "merchant"} <= tables(path)
    # A second run is a no-op, not an error.
    again = invoiceiq("db", "upgrade", cwd=tmp_path, database_url=f"sqlite+aiosqlite:///{path}")
    assert again.returncode == 0, again.stderr


def test_db_upgrade_uses_the_default_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    result = invoiceiq("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outbox_message" in tables(tmp_path / "invoiceiq.db")


def test_settings_are_read_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite+aiosqlite:///./from-dotenv.db\n")
    result = invoiceiq("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outbox_message" in tables(tmp_path / "from-dotenv.db")


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"], ["worker"]])
def test_production_with_defaults_is_refused_clearly(tmp_path: Path, command: list[str]) -> None:
    result = invoiceiq(
        *command, cwd=tmp_path, environment="production", whatsapp_app_secret="hunter2-app"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ENVIRONMENT=production refuses to start" in result.stderr
    assert "DATABASE_URL is SQLite" in result.stderr
    assert "METRICS_TOKEN is not set" in result.stderr
    assert "WHATSAPP_API_KEY is a dev- placeholder" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert not (tmp_path / "invoiceiq.db").exists()


def test_a_malformed_value_is_refused_clearly(tmp_path: Path) -> None:
    result = invoiceiq("db", "upgrade", cwd=tmp_path, simulator="maybe", vat_percent="-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SIMULATOR:" in result.stderr
    assert "VAT_PERCENT:" in result.stderr
    assert "maybe" not in result.stderr  # values are never echoed (some are secrets)


def test_an_unreachable_database_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{free_port()}/invoiceiq"
    result = invoiceiq("db", "upgrade", cwd=tmp_path, database_url=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot connect to postgresql+asyncpg://postgres:***@127.0.0.1" in result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr


OPERATOR_COMMANDS = [
    ["merchant", "api-key", "0712345678"],
    ["merchant", "suspend", "0712345678"],
    ["payments", "review"],
    ["payments", "query", "INV7K3QX9A"],
    ["outbox", "list"],
]


def test_operator_commands_refuse_a_database_a_newer_release_migrated(tmp_path: Path) -> None:
    path = tmp_path / "invoiceiq.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert invoiceiq("db", "upgrade", cwd=tmp_path, database_url=url).returncode == 0
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = invoiceiq("payments", "review", cwd=tmp_path, database_url=url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "was migrated by a newer InvoiceIQ; run this command from that release" in result.stderr


@pytest.mark.parametrize("command", OPERATOR_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("database", ["missing file", "not migrated", "unreachable"])
def test_operator_commands_on_a_database_not_ready_say_so_and_write_nothing(
    tmp_path: Path, command: list[str], database: str
) -> None:
    path = tmp_path / "invoiceiq.db"
    url = f"sqlite+aiosqlite:///{path}"
    if database == "not migrated":
        sqlite3.connect(path).close()  # there, but empty
    elif database == "unreachable":
        url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{free_port()}/invoiceiq"
    result = invoiceiq(*command, cwd=tmp_path, database_url=url)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    expected = {
        "missing file": "no database at sqlite+aiosqlite:///",
        "not migrated": "the database at sqlite+aiosqlite:///",
        "unreachable": "cannot connect to postgresql+asyncpg://postgres:***@127.0.0.1",
    }[database]
    assert f"Database error: {expected}" in result.stderr
    if database == "not migrated":
        assert "is not at the latest migration; run `invoiceiq db upgrade`" in result.stderr
    assert path.exists() is (database == "not migrated")  # no empty database left behind
    if path.exists():
        assert tables(path) == set()


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    app = create_app(make_settings(), run_worker=False)
    closed = uvicorn_config(app, make_settings(), host="127.0.0.1", port=8000)
    assert closed.proxy_headers is False
    assert closed.forwarded_allow_ips == []
    behind = make_settings(trusted_proxies="10.0.0.0/8,172.16.0.1")
    config = uvicorn_config(app, behind, host="0.0.0.0", port=8080)
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == ["10.0.0.0/8", "172.16.0.1"]
    assert config.log_config is None
    assert config.access_log is False


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "server.log"
    yield path


def _start(args: list[str], cwd: Path, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "invoiceiq", *args],
            cwd=cwd,
            env=cli_env(**settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _wait_until_healthy(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve did not answer /healthz in {START_TIMEOUT}s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("the process did not stop on SIGTERM")


@pytest.mark.parametrize("worker_flag", [[], ["--no-worker"]], ids=["with-worker", "no-worker"])
def test_serve_answers_health_checks_and_stops_on_sigterm(
    tmp_path: Path, server_log: Path, worker_flag: list[str]
) -> None:
    port = free_port()
    path = tmp_path / "served.db"
    process = _start(
        ["serve", "--host", "127.0.0.1", "--port", str(port), *worker_flag],
        tmp_path,
        server_log,
        database_url=f"sqlite+aiosqlite:///{path}",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_healthy(process, base, server_log)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        assert ready.headers["x-request-id"]
        assert httpx.get(f"{base}/i/no-such-invoice", timeout=10).status_code == 404
    finally:
        code = _stop(process) if process.poll() is None else process.returncode
    output = server_log.read_text()
    # uvicorn re-raises the SIGTERM it handled once shut down, so dying by it is clean too.
    assert code in (0, -signal.SIGTERM), output
    assert "Traceback" not in output
    assert "Application shutdown complete" in output
    # Logs are JSON lines; errors are logged with their route templates (fast successes are
    # only counted in /metrics).
    assert '"route": "/i/{token}"' in output
    assert "no-such-invoice" not in output
    assert '"route": "/readyz"' not in output


def test_worker_stops_on_sigterm(tmp_path: Path, server_log: Path) -> None:
    path = tmp_path / "worker.db"
    output = _worker_until(tmp_path, server_log, f"sqlite+aiosqlite:///{path}", "worker started")
    assert "outbox_message" in tables(path)
    assert "outbox listener" not in output  # SQLite: its one process wakes its own worker


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)
def test_worker_on_postgresql_listens_for_rows_other_processes_commit(
    tmp_path: Path, server_log: Path, database_url: str
) -> None:
    _worker_until(tmp_path, server_log, database_url, "outbox listener listening")


def _worker_until(tmp_path: Path, log: Path, database_url: str, text: str) -> str:
    """Start `invoiceiq worker`, wait for `text` in its log, stop it cleanly; its log."""
    process = _start(["worker"], tmp_path, log, database_url=database_url)
    try:
        _wait_for_log(process, log, text)
    finally:
        code = _stop(process) if process.poll() is None else process.returncode
    output = log.read_text()
    assert code == 0, output
    assert "worker stopped" in output
    assert "Traceback" not in output
    return output


def _wait_for_log(process: subprocess.Popen[bytes], log: Path, text: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while text not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in the log:\n{log.read_text()}")
        time.sleep(0.2)


def test_start_up_objects_are_frozen_out_of_the_collectors_sight() -> None:
    """What `serve` and `worker` do once started: what exists then (modules, classes, the app)
    is never walked by a collection again; objects made later still are."""
    gc.unfreeze()
    try:
        start_up: list[object] = []
        freeze_startup_objects()
        later: list[object] = []
        walked = gc.get_objects()  # what a full collection walks
        assert any(o is later for o in walked)
        assert not any(o is start_up for o in walked)
    finally:
        gc.unfreeze()


def test_bench_passes_its_options_to_the_benchmarks(tmp_path: Path) -> None:
    result = invoiceiq("bench", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m bench" in result.stdout and "--split-worker" in result.stdout


def test_bench_outside_a_clone_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "REPOSITORY", tmp_path)  # an installed package: no bench/ beside it
    result = CliRunner().invoke(cli.app, ["bench", "e2e"])
    assert result.exit_code == 2
    assert "from a clone of the repository" in result.output


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("192.0.2.2", "http://192.0.2.2:8000"),
        ("::1", "http://[::1]:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_serve_reaches_itself_where_it_listens(host: str, origin: str) -> None:
    """The built-in simulator and the worker's provider calls go to this address."""
    assert cli.local_origin(host, 8000) == origin


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = invoiceiq("serve", "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--port" in result.stderr and "65535" in result.stderr


def test_register_webhook_with_nothing_listening_says_it_could_not_reach_it(
    tmp_path: Path,
) -> None:
    """Nothing answered, so nothing was refused: in development the 360dialog it talks to is
    the app's simulator, at BASE_URL."""
    origin = f"http://127.0.0.1:{free_port()}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'invoiceiq.db'}"
    assert invoiceiq("db", "upgrade", cwd=tmp_path, database_url=url).returncode == 0
    result = invoiceiq(
        "whatsapp", "register-webhook", cwd=tmp_path, database_url=url, base_url=origin
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Could not reach 360dialog at {origin}/simulator/whatsapp" in result.stderr
    assert "is the app running at BASE_URL?" in result.stderr and "refused" not in result.stderr


def test_the_simulator_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    result = invoiceiq("simulator", "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2 and "less than or equal to 65535" in result.stderr
    assert "simulator at" not in result.stderr


@pytest.mark.parametrize(
    "command", [["db", "upgrade"], ["serve", "--port", str(free_port())], ["worker"]], ids=" ".join
)
def test_servers_and_migrations_refuse_a_database_a_newer_release_migrated(
    tmp_path: Path, command: list[str]
) -> None:
    """Rolling back to an older image after a newer one migrated: one sentence, no traceback."""
    path = tmp_path / "invoiceiq.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert invoiceiq("db", "upgrade", cwd=tmp_path, database_url=url).returncode == 0
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = invoiceiq(*command, cwd=tmp_path, database_url=url)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "was migrated by a newer InvoiceIQ, which this release cannot run on" in result.stderr
