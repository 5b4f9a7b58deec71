"""Running `invoiceiq …` in-process from a test, and preparing its database beforehand.

A command runs its own event loop, as it does from a shell; so the test around it is
synchronous, and its setup runs on a loop of its own (`with_sessions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from typer.testing import CliRunner, Result

from invoiceiq.cli import app
from invoiceiq.db.engine import SessionFactory, make_engine, make_session_factory

T = TypeVar("T")
Invoke = Callable[..., Result]


def invoker(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """`invoiceiq ARGS…` against `database_url`; run from an empty directory, so no
    developer .env is read."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def with_sessions(database_url: str, work: Callable[[SessionFactory], Awaitable[T]]) -> T:
    """Run `work` on its own engine and event loop."""

    async def main() -> T:
        engine = make_engine(database_url)
        try:
            return await work(make_session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())
